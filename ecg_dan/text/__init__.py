"""Text side of LLM-informed pretraining: encoders, text recipes, cached record embeddings."""

from ecg_dan.text.embedding_cache import (
    EmbeddingCache,
    cache_path,
    embed_records,
    embed_texts,
    record_texts,
)
from ecg_dan.text.encoders import (
    DEFAULT_TEXT_ENCODER,
    SentenceTransformerEncoder,
    TextEncoder,
    TextEncoderLoadError,
    load_text_encoder,
)
from ecg_dan.text.recipes import (
    RECIPES,
    RecipeError,
    Record,
    get_recipe,
    load_statements,
    parse_scp_codes,
    register_recipe,
    statement_text,
    statement_texts,
)

__all__ = [
    "DEFAULT_TEXT_ENCODER",
    "RECIPES",
    "EmbeddingCache",
    "Record",
    "RecipeError",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "TextEncoderLoadError",
    "cache_path",
    "embed_records",
    "embed_texts",
    "get_recipe",
    "load_statements",
    "load_text_encoder",
    "parse_scp_codes",
    "record_texts",
    "register_recipe",
    "statement_text",
    "statement_texts",
]
