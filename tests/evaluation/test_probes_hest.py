"""``pca_ridge`` against HEST-bench's regression, written from mahmoodlab/HEST ``src/hest/bench``.

``benchmark.py::predict_single_split``: ``Pipeline([StandardScaler(), PCA(latent_dim=256)])`` fitted on the train
split; ``trainer.py::train_test_reg``: ``Ridge(solver="lsqr", alpha=100 / (X_train.shape[1] * y_train.shape[1]),
fit_intercept=False, max_iter=1000)``, per-gene Pearson r, ``pearson_mean`` per split; ``merge_fold_results``:
mean over the predefined (patient-level) splits.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from napari_pathdistill.errors import EvaluationError
from napari_pathdistill.evaluation.probes import pca_ridge


def hest_split(x_train, x_test, y_train, y_test, latent_dim: int, seed: int) -> float:
    pipe = Pipeline([("scaler", StandardScaler()), ("PCA", PCA(n_components=latent_dim, random_state=seed))])
    x_train, x_test = pipe.fit_transform(x_train), pipe.transform(x_test)
    alpha = 100 / (x_train.shape[1] * y_train.shape[1])
    reg = Ridge(solver="lsqr", alpha=alpha, random_state=seed, fit_intercept=False, max_iter=1000)
    preds = reg.fit(x_train, y_train).predict(x_test)
    return float(np.mean([pearsonr(y_test[:, t], preds[:, t])[0] for t in range(y_test.shape[1])]))


def _patients(seed: int = 0, n_patients: int = 6, spots: int = 40, d: int = 48, t: int = 5):
    """Spots of one patient share an offset (neighbouring spots look alike): the leak GroupKFold prevents."""
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"p{i}" for i in range(n_patients)], spots)
    x = rng.normal(size=(len(groups), d)) + np.repeat(rng.normal(size=(n_patients, d)) * 2, spots, axis=0)
    y = x[:, :t] * 0.3 + rng.normal(size=(len(groups), t)) + 5.0  # a mean HEST's intercept-free ridge ignores
    return x, y, groups


@pytest.mark.parametrize("latent_dim", [256, 16])
def test_default_is_hest_bench_on_patient_level_splits(latent_dim):
    x, y, groups = _patients()
    res = pca_ridge(x, y, n_components=latent_dim, n_splits=3, seed=1, groups=groups)
    expected = []
    for tr, te in GroupKFold(n_splits=3).split(x, groups=groups):
        k = min(latent_dim, len(tr), x.shape[1])
        expected.append(hest_split(x[tr], x[te], y[tr], y[te], k, seed=1))
    assert res.fold_scores == pytest.approx(expected, abs=1e-8)
    assert res.n_components == min(latent_dim, x.shape[1])


def test_group_folds_check_the_group_count():
    x, y, groups = _patients(n_patients=4)
    with pytest.raises(EvaluationError, match=r"4 groups .* fewer than n_splits=5"):
        pca_ridge(x, y, groups=groups)
    with pytest.raises(EvaluationError, match="got 3 group ids for 160 samples"):
        pca_ridge(x, y, n_splits=2, groups=groups[:3])


def test_explicit_alpha_is_used():
    x, y, groups = _patients(1)
    a = pca_ridge(x, y, n_splits=3, groups=groups, alpha=1e4)
    b = pca_ridge(x, y, n_splits=3, groups=groups)
    assert a.fold_scores.tolist() != b.fold_scores.tolist()


def test_targets_must_have_one_row_per_feature_row():
    """100 feature rows and a 50 x 2 target table were reshaped to 100 x 1 and scored silently (pairing row i
    with half of another row's targets); 99 rows crashed in numpy's reshape."""
    x, y, _ = _patients(n_patients=5, spots=20, t=2)
    with pytest.raises(EvaluationError, match="100 feature rows but 50 rows of targets"):
        pca_ridge(x, y[:50], n_splits=3)
    with pytest.raises(EvaluationError, match="100 feature rows but 99 rows of targets"):
        pca_ridge(x, y[:99, :1], n_splits=3)
    y[3, 1] = np.nan
    with pytest.raises(EvaluationError, match="1 of 100 rows of targets hold NaN"):
        pca_ridge(x, y, n_splits=3)


def test_probe_labels_must_have_one_row_per_feature_row():
    from napari_pathdistill.evaluation.probes import knn_probe, linear_probe

    x, _, groups = _patients(n_patients=2, spots=30)
    with pytest.raises(EvaluationError, match="60 feature rows but 50 rows of labels"):
        linear_probe(x, groups[:50], n_splits=3)
    with pytest.raises(EvaluationError, match="60 feature rows but 59 rows of labels"):
        knn_probe(x, groups[1:], n_splits=3)


def _patient_tiles(seed: int = 0, n_patients: int = 12, tiles: int = 15):
    """Tiles of a patient share its look (an offset) and its label, and the label has no signal of its own:
    a tile-level split learns the patients, a patient-level one can only guess."""
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"p{i}" for i in range(n_patients)], tiles)
    labels = np.repeat(np.arange(n_patients) % 2, tiles)
    x = np.repeat(rng.normal(size=(n_patients, 16)) * 3, tiles, axis=0) + rng.normal(size=(len(groups), 16))
    return x, labels, groups


def test_probes_with_patient_groups_keep_each_patient_on_one_side():
    """Tile-level StratifiedKFold put tiles of one patient in train and test: 1.0 balanced accuracy on labels
    without any signal. With groups, the folds are scikit-learn's StratifiedGroupKFold (the reference)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline

    from napari_pathdistill.evaluation.probes import knn_probe, linear_probe

    x, y, groups = _patient_tiles()
    assert linear_probe(x, y, n_splits=3).mean > 0.95  # the leak
    assert knn_probe(x, y, n_splits=3).mean > 0.95
    res = linear_probe(x, y, n_splits=3, groups=groups)
    expected = []
    for tr, te in StratifiedGroupKFold(3, shuffle=True, random_state=0).split(x, y, groups):
        assert not set(groups[tr]) & set(groups[te])
        clf = make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=3000, class_weight="balanced", random_state=0)
        )
        expected.append(balanced_accuracy_score(y[te], clf.fit(x[tr], y[tr]).predict(x[te])))
    assert res.fold_scores == pytest.approx(expected)
    assert res.mean < 0.8 and knn_probe(x, y, n_splits=3, groups=groups).mean < 0.8
    with pytest.raises(EvaluationError, match=r"12 groups .* fewer than n_splits=13"):
        linear_probe(x, y, n_splits=13, groups=groups)
