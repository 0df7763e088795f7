{% test covers_serving_set(model, serving) %}
{#- Served chunks missing from the vector index, or indexed with a different vector. -#}
select served.chunk_id
from {{ serving }} as served
left join {{ model }} as indexed
    on served.chunk_id = indexed.chunk_id
where indexed.chunk_id is null or indexed.embedding <> served.embedding
{% endtest %}
