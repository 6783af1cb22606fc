"""Hybrid embeddings: LightFM (WARP loss) over item features built from the catalogue.

An item is represented by the (row-normalised) weighted sum of the embeddings of its
features: its tags, its category, the frequent words of its title and text, and, for items
that have interactions, an identity feature of its own. Because most of an item's vector
comes from shared features, an item nobody has touched yet, or one that arrives after
training (:meth:`HybridModel.embed_items`), still lands near the items it resembles.

LightFM scores ``u . v + b_u + b_i``; the published vectors carry the biases in two extra
dimensions (user ``[u, b_u, 1]``, item ``[v, 1, b_i]``) so that their dot product is exactly
that score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer

from recsys.columns import ITEM_ID
from recsys.dataset import InteractionData
from recsys.models.base import EmbeddingModel
from recsys.models.catalog import TOKEN_PATTERN, category_column, tags_column, text_column
from recsys.models.configs import HybridConfig

# Relative weight of each kind of feature before a row is normalised to sum to 1. Words of
# the title and text are many and individually weak, so each counts for half a tag.
IDENTITY_WEIGHT = 1.0
TAG_WEIGHT = 1.0
CATEGORY_WEIGHT = 1.0
TOKEN_WEIGHT = 0.5


def _token_vectorizer(vocabulary: list[str] | None = None, **kwargs: Any) -> CountVectorizer:
    return CountVectorizer(
        lowercase=True,
        token_pattern=TOKEN_PATTERN,
        binary=True,
        dtype=np.float32,
        vocabulary=vocabulary,
        **kwargs,
    )


class ItemFeatures:
    """The item-feature vocabulary and the catalogue -> sparse feature matrix transform.

    Columns are laid out as ``[identity | tags | categories | tokens]``. All state is plain
    lists of strings, so it saves to JSON.
    """

    def __init__(
        self,
        identity: list[str],
        tags: list[str],
        categories: list[str],
        tokens: list[str],
    ) -> None:
        self.identity = list(identity)
        self.tags = list(tags)
        self.categories = list(categories)
        self.tokens = list(tokens)
        self._identity_index = pd.Index(self.identity, dtype=object)
        self._tag_index = pd.Index(self.tags, dtype=object)
        self._category_index = pd.Index(self.categories, dtype=object)
        self._tag_offset = len(self.identity)
        self._category_offset = self._tag_offset + len(self.tags)
        self._token_offset = self._category_offset + len(self.categories)

    @property
    def n_features(self) -> int:
        return self._token_offset + len(self.tokens)

    @property
    def feature_names(self) -> list[str]:
        return (
            [f"id:{item}" for item in self.identity]
            + [f"tag:{tag}" for tag in self.tags]
            + [f"category:{category}" for category in self.categories]
            + [f"token:{token}" for token in self.tokens]
        )

    @classmethod
    def build(
        cls, items_df: pd.DataFrame, identity: list[str], config: HybridConfig
    ) -> ItemFeatures:
        """Learn the vocabularies from the catalogue.

        ``identity`` lists the items that get an identity feature: those with interactions.
        An item with none would only ever be a sampled negative for WARP, so its identity
        embedding would learn nothing but "nobody likes this"; it is represented by its
        shared features alone, exactly as a brand-new item is.
        """
        tag_lists = tags_column(items_df)
        tag_counts = pd.Series([tag for tags in tag_lists for tag in tags], dtype=object)
        counts = tag_counts.value_counts(sort=False)
        tags = sorted(counts.index[counts >= config.min_tag_count].tolist())
        categories = sorted({c for c in category_column(items_df) if c is not None})
        tokens: list[str] = []
        if config.max_text_tokens > 0:
            vectorizer = _token_vectorizer(
                stop_words="english",
                max_features=config.max_text_tokens,
                min_df=config.min_token_count,
            )
            try:
                vectorizer.fit(_token_documents(items_df))
            except ValueError:
                # No word survives min_token_count (or there is no text at all).
                pass
            else:
                vocabulary = vectorizer.vocabulary_
                tokens = sorted(vocabulary, key=vocabulary.__getitem__)
        return cls(identity=identity, tags=tags, categories=categories, tokens=tokens)

    def transform(self, items_df: pd.DataFrame) -> sp.csr_matrix:
        """Row-normalised float32 feature matrix, one row per catalogue row.

        Tags, categories and words outside the vocabulary are ignored; an item gets its
        identity feature only if its ``item_id`` is one of the trained identities.
        """
        n_rows = len(items_df)
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []

        def add(row: np.ndarray, col: np.ndarray, weight: float) -> None:
            known = col >= 0
            rows.append(row[known])
            cols.append(col[known])
            vals.append(np.full(int(known.sum()), weight, dtype=np.float32))

        if self.identity and ITEM_ID in items_df.columns:
            ids = pd.Index(items_df[ITEM_ID].astype(str), dtype=object)
            positions = self._identity_index.get_indexer(ids)
            add(np.arange(n_rows), positions, IDENTITY_WEIGHT)
        if self.tags:
            tag_lists = tags_column(items_df)
            lengths = np.fromiter((len(t) for t in tag_lists), dtype=np.int64, count=n_rows)
            flat = pd.Index([tag for tags in tag_lists for tag in tags], dtype=object)
            positions = self._tag_index.get_indexer(flat)
            positions = np.where(positions >= 0, positions + self._tag_offset, -1)
            add(np.repeat(np.arange(n_rows), lengths), positions, TAG_WEIGHT)
        if self.categories:
            categories = pd.Index(category_column(items_df), dtype=object)
            positions = self._category_index.get_indexer(categories)
            positions = np.where(positions >= 0, positions + self._category_offset, -1)
            add(np.arange(n_rows), positions, CATEGORY_WEIGHT)
        matrix = sp.csr_matrix(
            (
                np.concatenate(vals) if vals else np.empty(0, np.float32),
                (
                    np.concatenate(rows) if rows else np.empty(0, np.int64),
                    np.concatenate(cols) if cols else np.empty(0, np.int64),
                ),
            ),
            shape=(n_rows, self.n_features),
            dtype=np.float32,
        )
        if self.tokens:
            words = _token_vectorizer(self.tokens).transform(_token_documents(items_df))
            words = sp.csr_matrix(words, dtype=np.float32) * np.float32(TOKEN_WEIGHT)
            padding = sp.csr_matrix((n_rows, self._token_offset), dtype=np.float32)
            matrix = matrix + sp.hstack([padding, words], format="csr")
        matrix.sum_duplicates()
        row_sums = np.asarray(matrix.sum(axis=1)).ravel()
        scale = np.divide(1.0, row_sums, out=np.zeros_like(row_sums), where=row_sums > 0)
        return sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ matrix, dtype=np.float32)

    def to_json(self) -> dict[str, list[str]]:
        return {
            "identity": self.identity,
            "tags": self.tags,
            "categories": self.categories,
            "tokens": self.tokens,
        }

    @classmethod
    def from_json(cls, payload: dict[str, list[str]]) -> ItemFeatures:
        return cls(
            identity=payload["identity"],
            tags=payload["tags"],
            categories=payload["categories"],
            tokens=payload["tokens"],
        )


def _token_documents(items_df: pd.DataFrame) -> list[str]:
    titles = text_column(items_df, "title")
    texts = text_column(items_df, "text")
    return [f"{title} {text}" for title, text in zip(titles, texts, strict=True)]


class HybridModel(EmbeddingModel[HybridConfig]):
    """LightFM WARP with catalogue item features; needs ``items_df`` in ``fit``."""

    kind = "hybrid"
    config_class = HybridConfig

    def __init__(self, config: HybridConfig | None = None, *, name: str | None = None) -> None:
        super().__init__(config, name=name)
        self.features: ItemFeatures | None = None
        self.feature_embeddings: np.ndarray | None = None
        self.feature_biases: np.ndarray | None = None
        # The fitted LightFM object; kept in memory only (it is not saved).
        self.estimator: Any = None
        self._start_from: HybridModel | None = None
        # Whether the last fit continued from another model's state (see ``fit_from``).
        self.warm_started = False

    def fit_from(
        self,
        previous: HybridModel,
        interactions: InteractionData,
        items_df: pd.DataFrame | None = None,
    ) -> HybridModel:
        """Fit, continuing from ``previous``'s LightFM state for ``warm_start_epochs``.

        ``previous`` must be fitted in this process (its estimator is not saved) over the
        same users and component count: the learned ranker's first-stage fit, on an older
        slice of the same matrix. Features it had keep their embeddings, biases and
        AdaGrad state; features new since (items first liked since) start fresh.
        Otherwise, or with ``warm_start_epochs=0``, this is a plain ``fit``.
        """
        if (
            self.config.warm_start_epochs > 0
            and previous.estimator is not None
            and previous.features is not None
            and previous.config.no_components == self.config.no_components
            and previous.users == interactions.users
            and self._user_features(interactions) is None
        ):
            self._start_from = previous
        try:
            return self.fit(interactions, items_df)
        finally:
            self._start_from = None

    def _user_features(self, interactions: InteractionData) -> sp.csr_matrix | None:
        """Hook for user features (rows aligned with ``interactions.users``).

        None means one identity feature per user, LightFM's default. A subclass that returns
        features must make them reproducible at serving time itself.
        """
        return None

    def _fit(
        self, interactions: InteractionData, items_df: pd.DataFrame | None
    ) -> tuple[np.ndarray, np.ndarray]:
        from lightfm import LightFM

        if items_df is None:
            raise ValueError("HybridModel needs the item catalogue: fit(interactions, items_df)")
        config = self.config
        # WARP learns a ranking from positives only and treats every stored entry as one, so
        # dislikes and skips would be learned as likes; it also never looks at the values.
        # Negatives are therefore dropped; their information reaches the hybrid model only
        # through the behavioural models, and the positives' confidences become WARP's
        # per-interaction sample weights.
        positives = interactions.matrix.multiply(interactions.matrix > 0).tocoo()
        positives.eliminate_zeros()
        if positives.nnz == 0:
            raise ValueError("HybridModel needs at least one positive interaction")
        positives = sp.coo_matrix(positives, dtype=np.float32)
        train = sp.coo_matrix(
            (np.ones(positives.nnz, dtype=np.float32), (positives.row, positives.col)),
            shape=positives.shape,
        )
        sample_weight = None
        if config.use_sample_weight:
            # Mean 1, so the learning rate means the same whatever the confidence scale is.
            weights = positives.data / positives.data.mean()
            sample_weight = sp.coo_matrix(
                (weights.astype(np.float32), (train.row, train.col)), shape=train.shape
            )

        warm_items = np.unique(positives.col)
        identity = interactions.items.to_external(warm_items).astype(str).tolist()
        features = ItemFeatures.build(items_df, identity, config)
        item_features = features.transform(items_df)

        estimator = LightFM(
            no_components=config.no_components,
            loss="warp",
            learning_rate=config.learning_rate,
            item_alpha=config.item_alpha,
            user_alpha=config.user_alpha,
            max_sampled=config.max_sampled,
            random_state=config.random_state,
        )
        user_features = self._user_features(interactions)
        start_from, self.warm_started = self._start_from, self._start_from is not None
        if start_from is not None:
            _continue_from(estimator, start_from, features, train.shape[0])
        # fit_partial initialises a fresh estimator and continues a prepared one.
        estimator.fit_partial(
            train,
            user_features=user_features,
            item_features=item_features,
            sample_weight=sample_weight,
            epochs=config.warm_start_epochs if start_from else config.epochs,
            num_threads=config.num_threads,
        )
        self.estimator = estimator
        self.features = features
        self.feature_embeddings = np.ascontiguousarray(estimator.item_embeddings, np.float32)
        self.feature_biases = np.ascontiguousarray(estimator.item_biases, np.float32)

        user_biases, user_embeddings = estimator.get_user_representations(user_features)
        user_embeddings = np.array(user_embeddings, dtype=np.float32)
        user_biases = np.asarray(user_biases, dtype=np.float32)
        # A user with no positive interaction was never trained: their identity embedding is
        # still LightFM's random initialisation. Zero it so they score by item bias alone.
        if user_features is None:
            cold_users = np.diff(sp.csr_matrix(train).indptr) == 0
            user_embeddings[cold_users] = 0.0
            user_biases = np.where(cold_users, np.float32(0.0), user_biases)
        user_vectors = np.hstack(
            [user_embeddings, user_biases[:, None], np.ones((len(user_biases), 1), np.float32)]
        )
        return user_vectors, self._item_vectors(item_features)

    def _item_vectors(self, item_features: sp.csr_matrix) -> np.ndarray:
        if self.feature_embeddings is None or self.feature_biases is None:
            raise RuntimeError("HybridModel is not fitted")
        embeddings = np.asarray(item_features @ self.feature_embeddings, dtype=np.float32)
        biases = np.asarray(item_features @ self.feature_biases, dtype=np.float32)
        ones = np.ones((embeddings.shape[0], 1), dtype=np.float32)
        return np.hstack([embeddings, ones, biases[:, None]])

    def item_feature_matrix(self, items_df: pd.DataFrame) -> sp.csr_matrix:
        """The LightFM feature rows for ``items_df`` (for diagnostics and tests)."""
        if self.features is None:
            self._factors()
            raise RuntimeError("HybridModel has no feature vocabulary")
        return self.features.transform(items_df)

    def embed_items(self, items_df: pd.DataFrame) -> np.ndarray:
        """Publishable vectors for catalogue rows, e.g. items that arrived after training.

        Uses features only: tags, category and title/text words known to the model (unknown
        ones are ignored). A row whose ``item_id`` had an identity feature at training time
        gets it too, so a trained item is embedded exactly as in ``item_factors``.
        """
        if not isinstance(items_df, pd.DataFrame):
            raise ValueError("embed_items expects a DataFrame of catalogue rows")
        return self._item_vectors(self.item_feature_matrix(items_df))

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        if self.feature_embeddings is None or self.feature_biases is None:
            raise RuntimeError("HybridModel is not fitted")
        return {
            "feature_embeddings": self.feature_embeddings,
            "feature_biases": self.feature_biases,
        }

    def _extra_state(self) -> dict[str, Any]:
        if self.features is None:
            raise RuntimeError("HybridModel is not fitted")
        return {"features": self.features.to_json()}

    def _restore(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        self.features = ItemFeatures.from_json(state["features"])
        self.feature_embeddings = np.ascontiguousarray(arrays["feature_embeddings"], np.float32)
        self.feature_biases = np.ascontiguousarray(arrays["feature_biases"], np.float32)
        if self.feature_embeddings.shape[0] != self.features.n_features:
            raise ValueError(
                f"saved hybrid model is inconsistent: {self.feature_embeddings.shape[0]} "
                f"feature embeddings for {self.features.n_features} features"
            )
        self.estimator = None


# LightFM's per-feature state: the embeddings and biases with their AdaGrad accumulators.
_ITEM_STATE = (
    "item_embeddings",
    "item_embedding_gradients",
    "item_embedding_momentum",
    "item_biases",
    "item_bias_gradients",
    "item_bias_momentum",
)
_USER_STATE = tuple(name.replace("item", "user") for name in _ITEM_STATE)


def _continue_from(
    estimator: Any, previous: HybridModel, features: ItemFeatures, n_users: int
) -> None:
    """Initialise ``estimator`` for ``features`` and copy in ``previous``'s state for every
    feature (and every user) the two share."""
    assert previous.estimator is not None and previous.features is not None
    estimator._initialize(estimator.no_components, features.n_features, n_users)
    old = previous.estimator
    old_columns = pd.Index(previous.features.feature_names, dtype=object)
    columns = old_columns.get_indexer(pd.Index(features.feature_names, dtype=object))
    shared = np.flatnonzero(columns >= 0)
    for name in _ITEM_STATE:
        getattr(estimator, name)[shared] = getattr(old, name)[columns[shared]]
    for name in _USER_STATE:
        setattr(estimator, name, getattr(old, name).copy())
