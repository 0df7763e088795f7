{% test covers_serving_set(model, serving, index) %}
    {{- adapter.dispatch('test_covers_serving_set', 'ragmart')(model, serving, index) -}}
{% endtest %}

{% macro default__test_covers_serving_set(model, serving, index) %}
    {{- _adapter_not_supported('test_covers_serving_set') -}}
{% endmacro %}

{% macro duckdb__test_covers_serving_set(model, serving, index) %}
{#- Served chunks that neither the vector index nor the delta (`model`) holds, delta rows that
    are not served, and vectors that differ from the served one. Coverage is checked on every
    row by chunk_id; vectors are compared where they can have changed: every delta row (the
    delta is rebuilt each build), the index rows this build wrote (a compaction) and the index
    rows covering chunks this build served. The tables are insert and delete only, so a vector
    compared when it was written stays compared, and the test's cost follows the change (it
    used to compare every served vector: 1.5 s at 100,000 chunks). -#}
with

covered as (

    select chunk_id from {{ index }}
    union all
    select chunk_id from {{ model }}

),

missing as (

    select served.chunk_id, 'not searchable' as problem
    from {{ serving }} as served
    anti join covered on served.chunk_id = covered.chunk_id

),

stray as (

    select delta.chunk_id, 'in delta, not served' as problem
    from {{ model }} as delta
    anti join {{ serving }} as served on delta.chunk_id = served.chunk_id

),

served_now as (

    select chunk_id from {{ serving }}
    where dbt_invocation_id = '{{ invocation_id }}'

),

written as (

    select chunk_id, embedding from {{ model }}
    union all
    select indexed.chunk_id, indexed.embedding
    from {{ index }} as indexed
    where
        indexed.dbt_invocation_id = '{{ invocation_id }}'
        or indexed.chunk_id in (select served_now.chunk_id from served_now)

),

different as (

    select written.chunk_id, 'vector differs from the served one' as problem
    from written
    inner join {{ serving }} as served on written.chunk_id = served.chunk_id
    where written.embedding != served.embedding

)

select * from missing
union all
select * from stray
union all
select * from different
{% endmacro %}
