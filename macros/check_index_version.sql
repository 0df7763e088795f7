{% macro check_index_version() %}
    {{- return(adapter.dispatch('check_index_version', 'ragmart')()) -}}
{% endmacro %}

{% macro default__check_index_version() %}
    {{- _adapter_not_supported('check_index_version') -}}
{% endmacro %}

{% macro duckdb__check_index_version() %}
    {#- on-run-start: refuse, before any node runs, a build of an index version with another
        chunker, embedding model or dimensions than the version is bound to
        (index_version_binding). The serving set inserts only chunk ids it does not hold yet,
        and a chunk id names the document version and position, not the chunker: building a
        version with another chunker would keep the old rows under the ids both chunkers share
        and prune the rest, a mix of two chunkers (53 of 658 rows were left once). A version's
        name is also what publish, eval --compare, snapshots and citations refer to, and a
        forgotten var must not re-chunk and re-embed a whole version silently: so the build is
        refused, naming the two commands that do what was meant. --full-refresh rebuilds the
        version completely (every versioned relation) and binds it anew. Returns no SQL.
        The version's form (v1, v2, ...) is validate_settings' rule, checked in the hook before. -#}
    {%- if not execute or flags.WHICH not in ('build', 'run', 'test', 'retry') -%}
        {{- return('') -}}
    {%- endif -%}
    {%- set version = var('index_version') | string -%}
    {%- set asked = {
        'chunker_version': var('chunker_version') | string,
        'embedding_model': embedding_model(),
        'embedding_dimensions': embedding_dimensions(),
    } -%}
    {#- the contracts render the provider's size from the same settings as
        embedding_dimensions() (yml has no macros): a contract typed otherwise would fail
        every build with a cast error; name it instead -#}
    {%- set expected = 'float[' ~ asked.embedding_dimensions ~ ']' -%}
    {%- for node in graph.nodes.values() if node.resource_type == 'model'
        and node.package_name == 'ragmart' and 'embedding' in node.columns
        and node.columns['embedding'].data_type
        and node.columns['embedding'].data_type | lower != expected -%}
        {{- exceptions.raise_compiler_error(
            "the contract of " ~ node.name ~ " types its embedding column "
            ~ node.columns['embedding'].data_type ~ " but the embedding provider makes "
            ~ expected ~ " (macros/embedding_dimensions.sql): render its data_type with the"
            ~ " same rule"
        ) -}}
    {%- endfor -%}
    {%- set bound = index_version_binding(version) -%}
    {%- if bound is none or flags.FULL_REFRESH -%}
        {{- return('') -}}
    {%- endif -%}
    {%- set differs = [] -%}
    {%- for key in asked if bound[key] != asked[key] -%}
        {%- do differs.append(key) -%}
    {%- endfor -%}
    {%- if not differs -%}
        {{- return('') -}}
    {%- endif -%}
    {{- exceptions.raise_compiler_error(_index_version_refusal(version, bound, asked)) -}}
{% endmacro %}
