{% macro evaluate_retrieval() %}
    {#- Whether this build evaluates retrieval on the judged queries (fct_retrieval_eval and the
        test assert_candidate_does_not_regress): the var evaluate_retrieval (else the env var
        RAGMART_EVALUATE_RETRIEVAL), a boolean or true/false/1/0/yes/no/on/off. Off by default:
        an exact search of every judged question over the whole serving set costs time that
        grows with the corpus, which ordinary incremental builds must not pay. Turn it on for
        backfill builds; ragmart publish evaluates anyway. -#}
    {%- set value = var('evaluate_retrieval', env_var('RAGMART_EVALUATE_RETRIEVAL', 'false')) -%}
    {%- if value is boolean -%}
        {{- return(value) -}}
    {%- endif -%}
    {%- set text = value | string | trim | lower -%}
    {%- if text in ('true', '1', 'yes', 'on') -%}
        {{- return(true) -}}
    {%- elif text in ('false', '0', 'no', 'off', '', 'none') -%}
        {{- return(false) -}}
    {%- endif -%}
    {{- exceptions.raise_compiler_error(
        "var evaluate_retrieval must be true or false, got '" ~ value ~ "'"
    ) -}}
{% endmacro %}
