{% test covers_serving_set(model, serving, index) %}
{#- Served chunks that neither the vector index nor the delta (`model`) holds with the served
    vector, and delta rows that are not served. -#}
with

vectors as (

    select chunk_id, embedding from {{ index }}
    union all
    select chunk_id, embedding from {{ model }}

),

missing as (

    select served.chunk_id, 'not searchable' as problem
    from {{ serving }} as served
    where not exists (
        select 1 from vectors
        where vectors.chunk_id = served.chunk_id and vectors.embedding = served.embedding
    )

),

stray as (

    select delta.chunk_id, 'in delta, not served' as problem
    from {{ model }} as delta
    anti join {{ serving }} as served on delta.chunk_id = served.chunk_id

)

select * from missing
union all
select * from stray
{% endtest %}
