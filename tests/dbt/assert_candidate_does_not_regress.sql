{{ config(enabled=evaluate_retrieval()) }}
-- Fails when the serving set built in this run retrieves worse than the baseline: one row per
-- metric whose average over the judged questions (fct_retrieval_eval) fell below the baseline by
-- more than its tolerance; each is also logged with both values and the tolerance.
--   baseline:   the var eval_baseline, e.g. --vars '{eval_baseline: {recall_at_5: 0.61,
--               mrr: 0.72, ndcg_at_10: 0.66}}' (EvalReport.dbt_vars() writes it), else the
--               latest value per metric in the table published_eval_metrics (var
--               eval_baseline_relation): the metrics of what serves, written by
--               `ragmart publish`, `rollback` and `purge` (ragmart.serving.baseline), else, before
--               anything is published, none: the test passes.
--   tolerances: the vars eval_tolerance_recall_at_5, eval_tolerance_mrr and
--               eval_tolerance_ndcg_at_10, else the gate's defaults.
-- The defaults and the comparison are the gate's own (ragmart.quality.gate, the rule `ragmart
-- publish` applies), called through the functions ragmart_gate_tolerance and
-- ragmart_gate_regressed that the dbt-duckdb plugin registers: they are written nowhere else.
{% set columns = {'recall_at_5': 'recall_at_5', 'mrr': 'reciprocal_rank', 'ndcg_at_10': 'ndcg_at_10'} -%}
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

{#- a tolerance not given is none: the gate's default applies -#}
{%- set tolerances = {} -%}
{%- for metric in columns -%}
    {%- set value = var('eval_tolerance_' ~ metric, none) -%}
    {%- if value is not none and (value is not number or value < 0) -%}
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

{#- dbt only counts failing rows: name each failing metric in the log, by the same rule -#}
{%- if baseline and execute and flags.WHICH in ('build', 'test') -%}
    {%- set checks = [] -%}
    {%- for metric, column in columns.items() if metric in baseline -%}
        {%- set tolerance = "ragmart_gate_tolerance('" ~ metric ~ "')"
            if tolerances[metric] is none else tolerances[metric] -%}
        {%- do checks.append(
            "select '" ~ metric ~ "', avg(" ~ column ~ "), cast(" ~ baseline[metric]
            ~ " as double), cast(" ~ tolerance ~ " as double) from " ~ ref('fct_retrieval_eval')
        ) -%}
    {%- endfor -%}
    {%- set failing = run_query(
        "select * from (" ~ (checks | join(" union all "))
        ~ ") as m (metric, candidate, baseline, tolerance)"
        ~ " where ragmart_gate_regressed(baseline, candidate, tolerance)"
    ) -%}
    {%- for row in failing.rows -%}
        {#- agate reads numbers as Decimal -#}
        {%- set value, base, allowed = row[1] | float, row[2] | float, row[3] | float -%}
        {{- log(
            "fct_retrieval_eval regressed: " ~ row[0] ~ " " ~ ("%.4f" | format(value))
            ~ " is " ~ ("%.4f" | format(base - value)) ~ " below the baseline "
            ~ ("%.4f" | format(base)) ~ " (" ~ source ~ "), more than the tolerance "
            ~ ("%.4f" | format(allowed)),
            info=true,
        ) -}}
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
        coalesce(
            tolerance_values.tolerance, ragmart_gate_tolerance(tolerance_values.metric)
        ) as tolerance
    from (
        values
        {%- for metric, value in tolerances.items() %}
            ('{{ metric }}', cast({{ 'null' if value is none else value }} as double))
            {{- ',' if not loop.last }}
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
    where
        ragmart_gate_regressed(
            baseline.baseline_value, candidate.candidate_value, tolerances.tolerance
        )

)

select * from final
