{{ config(enabled=evaluate_retrieval()) }}

-- Retrieval quality of the serving set built in this run, one row per judged question:
-- recall@5, reciprocal rank and nDCG@10 at document level, as ragmart.quality.metrics computes
-- them (tests/python/test_evaluation.py compares the two). Exact search: documents are ranked
-- by their best chunk, the least (cosine distance to the question, chunk_id). The test
-- assert_candidate_does_not_regress compares the averages with the published baseline.
with

judged as (

    select * from {{ ref('judged_queries') }}

),

question_vectors as (

    select * from {{ ref('int_judged_query_embeddings') }}
    where embedding_model = '{{ embedding_model() }}'

),

served as (

    select * from {{ ref('fct_chunk_embeddings') }}

),

questions as (

    select
        judged.query_id,
        judged.question,
        question_vectors.embedding_model,
        cast(question_vectors.embedding as float[{{ embedding_dimensions() }}]) as embedding
    from judged
    inner join question_vectors
        on
            judged.query_id = question_vectors.query_id
            and sha256(judged.question) = question_vectors.question_hash

),

relevant_ids as (

    select
        query_id,
        unnest(string_split(relevant_document_ids, ';')) as document_id
    from judged

),

relevant_documents as (

    select distinct
        relevant_ids.query_id,
        trim(relevant_ids.document_id) as document_id
    from relevant_ids
    inner join questions
        on relevant_ids.query_id = questions.query_id
    where trim(relevant_ids.document_id) <> ''

),

served_documents as (

    select
        document_id,
        min(document_type) as document_type
    from served
    group by document_id

),

chunk_distances as (

    select
        questions.query_id,
        served.document_id,
        served.chunk_id,
        array_cosine_distance(served.embedding, questions.embedding) as distance
    from questions
    inner join served
        on questions.embedding_model = served.embedding_model

),

-- a document ranks by its best chunk, i.e. its least (distance, chunk_id): an aggregate per
-- (question, document), not a window over every (question, chunk) pair (10x faster at 20k)
document_best_chunks as (

    select
        query_id,
        document_id,
        min(struct_pack(distance := distance, chunk_id := chunk_id)) as best_chunk
    from chunk_distances
    group by query_id, document_id

),

ranked_documents as (

    select
        document_best_chunks.query_id,
        document_best_chunks.document_id,
        row_number() over (
            partition by document_best_chunks.query_id
            order by
                document_best_chunks.best_chunk.distance asc,
                document_best_chunks.best_chunk.chunk_id asc
        ) as document_rank
    from document_best_chunks

),

relevant_ranks as (

    select
        relevant_documents.query_id,
        relevant_documents.document_id,
        ranked_documents.document_rank,
        served_documents.document_type,
        served_documents.document_id is not null as is_served
    from relevant_documents
    left join ranked_documents
        on
            relevant_documents.query_id = ranked_documents.query_id
            and relevant_documents.document_id = ranked_documents.document_id
    left join served_documents
        on relevant_documents.document_id = served_documents.document_id

),

query_ranks as (

    select
        query_id,
        count(*) as relevant_documents,
        count(*) filter (where is_served) as relevant_documents_served,
        count(*) filter (where document_rank <= 5) as relevant_documents_in_top_5,
        min(document_rank) as first_relevant_rank,
        coalesce(
            sum(1 / log2(document_rank + 1)) filter (where document_rank <= 10), 0
        ) as dcg_at_10,
        list_sort(list_distinct(list(document_type))) as document_types
    from relevant_ranks
    group by query_id

),

ideal_ranks as (

    select unnest(range(1, 11)) as ideal_rank

),

ideal_gains as (

    select
        query_ranks.query_id,
        sum(1 / log2(ideal_ranks.ideal_rank + 1)) as ideal_dcg_at_10
    from query_ranks
    inner join ideal_ranks
        on query_ranks.relevant_documents >= ideal_ranks.ideal_rank
    group by query_ranks.query_id

),

top_documents as (

    select
        query_id,
        list(document_id order by document_rank) as top_document_ids
    from ranked_documents
    where document_rank <= 5
    group by query_id

),

final as (

    select
        questions.query_id,
        questions.question,
        query_ranks.document_types,
        query_ranks.relevant_documents,
        query_ranks.relevant_documents_served,
        query_ranks.first_relevant_rank,
        top_documents.top_document_ids,
        cast(query_ranks.relevant_documents_in_top_5 as double)
        / query_ranks.relevant_documents as recall_at_5,
        coalesce(cast(1 as double) / query_ranks.first_relevant_rank, 0) as reciprocal_rank,
        query_ranks.dcg_at_10 / ideal_gains.ideal_dcg_at_10 as ndcg_at_10,
        questions.embedding_model,
        '{{ invocation_id }}' as dbt_invocation_id
    from questions
    inner join query_ranks
        on questions.query_id = query_ranks.query_id
    inner join ideal_gains
        on questions.query_id = ideal_gains.query_id
    left join top_documents
        on questions.query_id = top_documents.query_id

)

select * from final
