{% macro _yaml_flow(mapping) %}
    {#- `mapping` as a one-line YAML flow mapping for `--vars '...'`: plain scalars unquoted,
        anything else as JSON (valid YAML). -#}
    {%- set items = [] -%}
    {%- for key, value in mapping.items() -%}
        {%- if value is boolean -%}
            {%- set text = 'true' if value else 'false' -%}
        {%- elif value is number -%}
            {%- set text = value | string -%}
        {%- elif value is string and modules.re.match('^[A-Za-z0-9][A-Za-z0-9_.@/-]*$', value)
            and value | lower not in ('true', 'false', 'yes', 'no', 'on', 'off', 'null') -%}
            {%- set text = value -%}
        {%- else -%}
            {%- set text = value | tojson -%}
        {%- endif -%}
        {%- do items.append(key ~ ': ' ~ text) -%}
    {%- endfor -%}
    {{- return('{' ~ (items | join(', ')) ~ '}') -}}
{% endmacro %}
