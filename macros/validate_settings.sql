{% macro validate_settings() %}
    {{- return(adapter.dispatch('validate_settings', 'ragmart')()) -}}
{% endmacro %}

{% macro default__validate_settings() %}
    {#- on-run-start: every setting that reaches SQL (a relation name, a string literal, a
        number, a file glob) is checked here, before the build runs anything. A bad value
        fails the build in one line naming it and the valid form; no table is created. Values
        are also quoted where they reach SQL as literals; this check is what keeps an
        identifier (index_version in relation names) or a number from carrying SQL. -#}
    {%- set errors = [] -%}
    {%- set re = modules.re -%}

    {%- set landing_dir = var('landing_dir', env_var('RAGMART_LANDING_DIR', 'data/landing')) | string -%}
    {%- if not landing_dir | trim -%}
        {%- do errors.append("landing_dir (RAGMART_LANDING_DIR) is empty: set it to the landing zone's path") -%}
    {%- elif re.search('[\\[\\]*?\\\\]', landing_dir) -%}
        {%- do errors.append("landing_dir (RAGMART_LANDING_DIR) '" ~ landing_dir ~ "' contains one of [ ] * ? \\, "
            ~ "which DuckDB's file glob cannot match literally: rename the directory or point to it through a symlink") -%}
    {%- endif -%}

    {%- do _ragmart_check_pattern(errors, 'index_version', var('index_version'),
        'v[0-9]+', 'v followed by digits (v1, v2)') -%}
    {%- do _ragmart_check_pattern(errors, 'chunker_version', var('chunker_version'),
        '[a-z0-9][a-z0-9._-]*', 'lowercase letters, digits and . _ - (md-sections-v1)') -%}
    {%- do _ragmart_check_pattern(errors, 'embedding_model (RAGMART_EMBEDDING_MODEL, or the provider settings)',
        embedding_model(), '[A-Za-z0-9][A-Za-z0-9._:/@+-]*',
        'letters, digits and . _ : / @ + - (text-embedding-3-small@384)') -%}
    {%- do _ragmart_check_pattern(errors, 'eval_baseline_relation',
        var('eval_baseline_relation', 'published_eval_metrics'), '[A-Za-z_][A-Za-z0-9_]*',
        'a table name: letters, digits and _') -%}

    {%- do _ragmart_check_integer(errors, 'max_content_bytes (RAGMART_MAX_CONTENT_BYTES)',
        var('max_content_bytes', env_var('RAGMART_MAX_CONTENT_BYTES', '1000000')), 1) -%}
    {%- for name in ['source_freshness_warn_after_hours', 'source_freshness_error_after_hours'] -%}
        {%- do _ragmart_check_integer(errors, name, var(name), 0) -%}
    {%- endfor -%}
    {%- for name in ['vector_index_max_dead_ratio', 'vector_delta_max_rows', 'vector_delta_max_ratio',
                     'embedding_lag_sla_minutes'] -%}
        {%- if var(name) is not number -%}
            {%- do errors.append(name ~ " '" ~ var(name) ~ "' is not a number") -%}
        {%- endif -%}
    {%- endfor -%}
    {#- embedding_lag_sla_severity: dbt itself refuses anything but warn and error -#}
    {%- do evaluate_retrieval() -%}

    {%- if errors -%}
        {{- exceptions.raise_compiler_error(
            "invalid settings, nothing was built: " ~ (errors | join('; '))
            ~ " (see the README, 'Settings')"
        ) -}}
    {%- endif -%}
    {{- return('select 1 as settings_are_valid') -}}
{% endmacro %}

{% macro _ragmart_check_pattern(errors, name, value, pattern, form) %}
    {%- if value is not string or not modules.re.fullmatch(pattern, value) -%}
        {%- do errors.append(name ~ " '" ~ value ~ "' is not valid: write " ~ form) -%}
    {%- endif -%}
{% endmacro %}

{% macro _ragmart_check_integer(errors, name, value, minimum) %}
    {%- set text = value | string | trim -%}
    {%- if value is boolean or not modules.re.fullmatch('-?[0-9]+', text) or (text | int) < minimum -%}
        {%- do errors.append(name ~ " '" ~ value ~ "' is not valid: write an integer >= " ~ minimum) -%}
    {%- endif -%}
{% endmacro %}
