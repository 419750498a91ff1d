"""Embedding model names as users write them, resolved once for everyone who needs them.

``resolve_model`` is the one parser behind ``get_embedder``, the reprocess quote and the Batch API:
provider, model, the dimensions its vectors will have, the name they are stored under in
``vectors.model`` (``openai:text-embedding-3-small@512``), and a refusal up front for a size
pgvector cannot index (HNSW: ``vector`` up to 2000 dimensions, ``halfvec`` up to 4000).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.config import Settings
from app.embedders.base import EmbedderUnavailable

LOCAL_MODEL = "all-MiniLM-L6-v2"
LOCAL_DIMENSIONS = 384
OPENAI_DEFAULT = "text-embedding-3-small"
OPENAI_NATIVE_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072,
                            "text-embedding-ada-002": 1536}  # fmt: skip
OPENAI_FIXED_SIZE = frozenset({"text-embedding-ada-002"})  # takes no ``dimensions`` parameter
MAX_VECTOR_INDEX_DIMENSIONS = 2000  # pgvector HNSW on vector(n)
MAX_INDEXED_DIMENSIONS = 4000  # pgvector HNSW on halfvec(n)
_LOCAL_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


@dataclass(frozen=True)
class ModelSpec:
    provider: str  # "local" | "openai"
    name: str  # the provider's model name: "text-embedding-3-large"
    dimensions: int  # size of the vectors it makes
    send_dimensions: bool  # OpenAI: ask for fewer dimensions than the model's own

    @property
    def stored(self) -> str:
        """The name vectors, the embedding cache and the ledger know the model by."""
        return f"{self.provider}:{self.name}" + (f"@{self.dimensions}" if self.send_dimensions else "")


def parse_model(model: str | None, settings: Settings) -> tuple[str, str, int | None]:
    """(provider, model name, dimensions asked for or None) for a model name as users write it."""
    spec = (model or "").strip()
    if not spec:
        return ("openai", OPENAI_DEFAULT, None) if settings.openai_api_key else ("local", LOCAL_MODEL, None)
    if spec.lower() in ("local", "openai"):  # a provider alone: its default model
        return ("local", LOCAL_MODEL, None) if spec.lower() == "local" else ("openai", OPENAI_DEFAULT, None)
    dimensions: int | None = None
    if "@" in spec:
        spec, _, raw = spec.rpartition("@")
        if not raw.isdigit() or int(raw) <= 0:
            raise EmbedderUnavailable(f"{model!r}: the part after '@' must be a number of dimensions")
        dimensions = int(raw)
    provider, sep, name = spec.partition(":")
    if not sep:
        provider, name = "", spec
    provider = provider.lower()
    if provider in ("", "local") and name.lower() in _LOCAL_ALIASES:
        if dimensions not in (None, LOCAL_DIMENSIONS):
            raise EmbedderUnavailable(f"{model!r}: all-MiniLM-L6-v2 always has {LOCAL_DIMENSIONS} dimensions")
        return "local", LOCAL_MODEL, None
    if provider == "local":
        raise EmbedderUnavailable(f"{model!r}: the only local model is local:{LOCAL_MODEL} (bundled, offline)")
    if provider == "openai" or (provider == "" and name.startswith("text-embedding-")):
        return "openai", name, dimensions
    raise EmbedderUnavailable(
        f"unknown embedding model {model!r}; use local:{LOCAL_MODEL} or openai:<model>[@dimensions]"
    )


def openai_spec(name: str, dimensions: int | None) -> ModelSpec:
    """An OpenAI model and the dimensions asked for (None: the model's own), checked."""
    native = OPENAI_NATIVE_DIMENSIONS.get(name)
    if dimensions is not None and name in OPENAI_FIXED_SIZE:
        raise EmbedderUnavailable(f"{name} has a fixed size of {native}; drop the @dimensions suffix")
    if native is None and dimensions is None:
        raise EmbedderUnavailable(
            f"unknown OpenAI embedding model {name!r}: give its size as openai:{name}@DIMENSIONS "
            f"(known: {', '.join(sorted(OPENAI_NATIVE_DIMENSIONS))})"
        )
    if native is not None and dimensions is not None and dimensions > native:
        raise EmbedderUnavailable(f"{name} makes at most {native} dimensions, not {dimensions}")
    size = int(dimensions or native or 0)
    return check_indexable(ModelSpec("openai", name, size, dimensions is not None and dimensions != native))


def check_indexable(spec: ModelSpec) -> ModelSpec:
    if spec.dimensions > MAX_INDEXED_DIMENSIONS:
        raise EmbedderUnavailable(
            f"{spec.stored} makes {spec.dimensions}-dimensional vectors; pgvector's HNSW indexes hold at most "
            f"{MAX_INDEXED_DIMENSIONS} (halfvec), so search could not use them: ask for fewer with "
            f"@{MAX_INDEXED_DIMENSIONS} or less"
        )
    return spec


def resolve_model(model: str | None, settings: Settings) -> ModelSpec:
    """What ``model`` (as users write it) means; EmbedderUnavailable with the reason if it is unusable."""
    provider, name, dimensions = parse_model(model, settings)
    if provider == "local":
        return ModelSpec("local", LOCAL_MODEL, LOCAL_DIMENSIONS, False)
    return openai_spec(name, dimensions)
