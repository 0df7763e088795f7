{% macro _index_version_refusal(version, bound, asked) %}
    {#- The message of check_index_version: what the version is bound to, what was asked, and
        the exact commands to run instead, the caller's other vars kept: the version as bound
        (a forgotten chunker_version), what was asked under the next free version, or a
        --full-refresh of the version with what was asked. -#}
    {%- set registry = index_versions_relation() -%}
    {%- set numbers = [] -%}
    {%- set relations = list_relations_without_caching(
        api.Relation.create(database=registry.database, schema=registry.schema)
    ) -%}
    {%- for row in relations if modules.re.fullmatch('fct_chunk_embeddings_v[0-9]+', row['name']) -%}
        {%- do numbers.append(row['name'].split('_v')[-1] | int) -%}
    {%- endfor -%}
    {%- if adapter.get_relation(registry.database, registry.schema, registry.identifier) -%}
        {%- for row in run_query("select index_version from " ~ registry) -%}
            {%- do numbers.append(row[0][1:] | int) -%}
        {%- endfor -%}
    {%- endif -%}
    {%- set new_version = 'v' ~ ((numbers | max) + 1) -%}
    {%- set cli_vars = invocation_args_dict.get('vars') or {} -%}
    {%- set new_vars = {'index_version': new_version, 'chunker_version': asked.chunker_version} -%}
    {%- set rebuild_vars = {'index_version': version, 'chunker_version': asked.chunker_version} -%}
    {%- for key, value in (cli_vars.items() if cli_vars is mapping else []) -%}
        {%- if key not in new_vars -%}
            {%- do new_vars.update({key: value}) -%}
            {%- do rebuild_vars.update({key: value}) -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if 'evaluate_retrieval' not in new_vars -%}
        {%- do new_vars.update({'evaluate_retrieval': true}) -%}
    {%- endif -%}
    {#- the version as it is bound, as probably meant by a build that left out a var -#}
    {%- set bound_vars = {'index_version': version, 'chunker_version': bound.chunker_version} -%}
    {%- for key, value in rebuild_vars.items() if key not in bound_vars -%}
        {%- do bound_vars.update({key: value}) -%}
    {%- endfor -%}
    {%- if ', ' in bound.chunker_version or ', ' in bound.embedding_model -%}
        {%- set as_bound = '' -%}
    {%- elif bound.embedding_model == asked.embedding_model
        and bound.embedding_dimensions == asked.embedding_dimensions -%}
        {%- set as_bound = "To build " ~ version ~ " as it is bound:\n    dbt build --vars '"
            ~ _yaml_flow(bound_vars) ~ "'\n" -%}
    {%- else -%}
        {%- set as_bound = "To build " ~ version ~ " as it is bound, build it where the"
            ~ " embedding model is " ~ bound.embedding_model ~ " (RAGMART_EMBEDDING_PROVIDER, or"
            ~ " the var embedding_model).\n" -%}
    {%- endif -%}
    {%- set described = {} -%}
    {%- for name, binding in [('bound', bound), ('asked', asked)] -%}
        {%- do described.update({name: 'chunker ' ~ binding.chunker_version ~ ', embedding model '
            ~ binding.embedding_model ~ ' (' ~ binding.embedding_dimensions ~ ' dimensions)'}) -%}
    {%- endfor -%}
    {{- return(
        "index version " ~ version ~ " is bound to " ~ described.bound
        ~ " (" ~ bound.evidence ~ "); this build asks for " ~ described.asked
        ~ ". Nothing was built: one version holds the chunks of one chunker and the vectors of"
        ~ " one model, never a mix.\n"
        ~ as_bound
        ~ "To build what was asked as a new version beside " ~ version ~ ":\n"
        ~ "    dbt build --vars '" ~ _yaml_flow(new_vars) ~ "'\n"
        ~ "or to rebuild " ~ version ~ " completely with it (its serving set, history and vector"
        ~ " index are replaced; other versions' tables are untouched):\n"
        ~ "    dbt build --full-refresh --vars '" ~ _yaml_flow(rebuild_vars) ~ "'\n"
        ~ "(keep the environment of this build: RAGMART_EMBEDDING_PROVIDER and its settings"
        ~ " choose the embedding model)"
    ) -}}
{% endmacro %}
