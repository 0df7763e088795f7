{{ config(enabled=evaluate_retrieval()) }}
-- Fails when the serving set built in this run retrieves worse than the baseline: one row per
-- metric whose average over the judged questions (fct_retrieval_eval) fell below the baseline by
-- more than its tolerance; each is also logged with both values and the tolerance.
--   baseline:   the var eval_baseline, e.g. --vars '{eval_baseline: {recall_at_5: 0.61,
--               mrr: 0.72, ndcg_at_10: 0.66}}' (EvalReport.dbt_vars() writes it), else the
--               latest value per metric in the table published_eval_metrics (var
--               eval_baseline_relation): the metrics of what serves, written by
--               `ragmart publish`, `rollback` and `purge` (ragmart.serving.publish), else, before
--               anything is published, none: the test passes.
--   tolerances: the vars eval_tolerance_recall_at_5 (default 0.02), eval_tolerance_mrr (0.03)
--               and eval_tolerance_ndcg_at_10 (0.03), as ragmart.quality.evaluation.DEFAULT_TOLERANCE.
{% set columns = {'recall_at_5': 'recall_at_5', 'mrr': 'reciprocal_rank', 'ndcg_at_10': 'ndcg_at_10'} -%}
{%- set default_tolerances = {'recall_at_5': 0.02, 'mrr': 0.03, 'ndcg_at_10': 0.03} -%}
{%- set errors = [] -%}

{#- the baseline: the var, else the published metrics -#}
{%- set baseline = var('eval_baseline', none) -%}
{%- set source = 'var eval_baseline' -%}
{%- if baseline is string -%}
    {%- set baseline = fromjson(baseline) if baseline | trim else none -%}
    {%- if baseline is none and var('eval_baseline') | trim -%}
        {%- do errors.append("eval_baseline " ~ var('eval_baseline') ~ " is not valid JSON") -%}
    {%- endif -%}
{%- endif -%}
{%- if baseline is not none and baseline is not mapping -%}
    {%- do errors.append("eval_baseline must map metric names to values, got " ~ baseline) -%}
{%- elif baseline is mapping -%}
    {%- for metric, value in baseline.items() -%}
        {%- if metric not in columns -%}
            {%- do errors.append("eval_baseline: unknown metric " ~ metric) -%}
        {%- elif value is not number -%}
            {%- do errors.append("eval_baseline: " ~ metric ~ " must be a number, got " ~ value) -%}
        {%- endif -%}
    {%- endfor -%}
{%- endif -%}

{%- set tolerances = {} -%}
{%- for metric, default in default_tolerances.items() -%}
    {%- set value = var('eval_tolerance_' ~ metric, default) -%}
    {%- if value is not number or value < 0 -%}
        {%- do errors.append("eval_tolerance_" ~ metric ~ " must be a number >= 0, got " ~ value) -%}
    {%- endif -%}
    {%- do tolerances.update({metric: value}) -%}
{%- endfor -%}

{%- if errors -%}
    {{- exceptions.raise_compiler_error(
        "assert_candidate_does_not_regress: " ~ (errors | join('; ')) ~ ". Write e.g. --vars "
        ~ "'{eval_baseline: {recall_at_5: 0.61, mrr: 0.72, ndcg_at_10: 0.66}, "
        ~ "eval_tolerance_mrr: 0.05}' (metrics: " ~ (columns.keys() | join(', ')) ~ ")"
    ) -}}
{%- endif -%}

{%- if baseline is none and execute -%}
    {%- set published = adapter.get_relation(
        database=target.database,
        schema=target.schema,
        identifier=var('eval_baseline_relation', 'published_eval_metrics'),
    ) -%}
    {%- if published is not none -%}
        {%- set source = published | string -%}
        {%- set latest = run_query(
            "select metric, arg_max(metric_value, publish_seq) from " ~ published
            ~ " group by metric"
        ) -%}
        {%- set baseline = {} -%}
        {%- for row in latest.rows if row[0] in columns -%}
            {%- do baseline.update({row[0]: row[1] | float}) -%}
        {%- endfor -%}
    {%- endif -%}
{%- endif -%}

{#- dbt only counts failing rows: name each failing metric in the log -#}
{%- if baseline and execute and flags.WHICH in ('build', 'test') -%}
    {%- set averages = [] -%}
    {%- for column in columns.values() -%}
        {%- do averages.append("avg(" ~ column ~ ")") -%}
    {%- endfor -%}
    {%- set averages = run_query(
        "select " ~ (averages | join(", ")) ~ " from " ~ ref('fct_retrieval_eval')
    ).rows[0] -%}
    {%- for metric in columns -%}
        {#- agate reads numbers as Decimal -#}
        {%- set value = none if averages[loop.index0] is none else averages[loop.index0] | float -%}
        {%- if metric in baseline and value is not none
            and baseline[metric] - value > tolerances[metric] + 1e-12 -%}
            {{- log(
                "fct_retrieval_eval regressed: " ~ metric ~ " " ~ ("%.4f" | format(value))
                ~ " is " ~ ("%.4f" | format(baseline[metric] - value)) ~ " below the baseline "
                ~ ("%.4f" | format(baseline[metric])) ~ " (" ~ source
                ~ "), more than the tolerance " ~ ("%.4f" | format(tolerances[metric])),
                info=true,
            ) -}}
        {%- endif -%}
    {%- endfor -%}
{%- endif %}

with

candidate as (

    {%- for metric, column in columns.items() %}
        select
            '{{ metric }}' as metric,
            avg({{ column }}) as candidate_value
        from {{ ref('fct_retrieval_eval') }}
        {%- if not loop.last %}
            union all
        {%- endif %}
    {%- endfor %}

),

baseline as (

    {%- if baseline %}
        select
            baseline_values.metric,
            baseline_values.baseline_value
        from (
            values
            {%- for metric, value in baseline.items() %}
                ('{{ metric }}', cast({{ value }} as double)){{ ',' if not loop.last }}
            {%- endfor %}
        ) as baseline_values (metric, baseline_value)
    {%- else %}
        select
            cast(null as varchar) as metric,
            cast(null as double) as baseline_value
        where false
    {%- endif %}

),

tolerances as (

    select
        tolerance_values.metric,
        tolerance_values.tolerance
    from (
        values
        {%- for metric, value in tolerances.items() %}
            ('{{ metric }}', cast({{ value }} as double)){{ ',' if not loop.last }}
        {%- endfor %}
    ) as tolerance_values (metric, tolerance)

),

final as (

    select
        candidate.metric,
        candidate.candidate_value,
        baseline.baseline_value,
        tolerances.tolerance,
        baseline.baseline_value - candidate.candidate_value as regression
    from candidate
    inner join baseline
        on candidate.metric = baseline.metric
    inner join tolerances
        on candidate.metric = tolerances.metric
    -- a drop of exactly the tolerance passes, whatever the float rounding
    where baseline.baseline_value - candidate.candidate_value > tolerances.tolerance + 1e-12

)

select * from final
