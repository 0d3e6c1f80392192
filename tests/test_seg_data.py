"""Generated phantoms, the organ-tiny scenario, and NIfTI loading on small volumes this test writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cl_suite.config import ConfigError
from scenarios import organ_nifti
from scenarios.organ_phantoms import ORGAN_NAMES, ORGANS, make_case, window
from scenarios.organ_segmentation import OrganNifti, OrganNiftiConfig, OrganTiny, OrganTinyConfig

nib = pytest.importorskip("nibabel")
pytest.importorskip("monai")


def test_phantom_is_deterministic_and_anatomically_ordered():
    hu, labels = make_case(5, size=32, slices=6)
    hu2, labels2 = make_case(5, size=32, slices=6)
    np.testing.assert_array_equal(hu, hu2)
    np.testing.assert_array_equal(labels, labels2)
    assert not np.array_equal(make_case(6, size=32, slices=6)[1], labels)
    mean = {name: hu[labels == k].mean() for k, name in enumerate(ORGAN_NAMES, 1) if (labels == k).any()}
    assert {"liver", "kidney_left", "vertebra", "aorta"} <= set(mean)
    assert mean["vertebra"] > mean["kidney_left"] > mean["liver"] > hu[(labels == 0) & (hu > -500)].mean()
    assert hu[0, 0, 0] < -800  # air outside the body
    liver = np.argwhere(labels == 1 + [o.name for o in ORGANS].index("liver"))
    assert liver[:, 2].mean() < 16  # the patient's right is on the image's left (radiological convention)
    assert window(np.array([-1000.0, 50.0, 900.0])).tolist() == [0.0, 0.5, 1.0]


def test_organ_tiny_tasks_have_partial_labels_and_global_ids():
    scenario = OrganTiny(tiny=True)
    tasks = scenario.tasks()
    assert len(tasks) == 2
    assert tasks[0].classes == (1, 2, 3, 4) and tasks[1].classes == (5, 6, 7)
    assert tasks[1].meta["old_organs"] == ["liver", "spleen", "kidney_right", "kidney_left"]
    for task in tasks:
        for split in (task.train, task.test):
            assert set(torch.unique(split.y).tolist()) <= {0, *task.classes}
            item = split[0]
            assert item["x"].shape == (1, 48, 48) and item["y"].shape == (48, 48) and item["x"].min() >= 0
    assert set(torch.unique(tasks[0].train.case).tolist()).isdisjoint(torch.unique(tasks[1].train.case).tolist())


def test_organ_tiny_rejects_unknown_or_repeated_organs():
    with pytest.raises(ConfigError, match="organs from"):
        OrganTiny(OrganTinyConfig(tasks=("liver,heart",)))
    with pytest.raises(ConfigError, match="distinct"):
        OrganTiny(OrganTinyConfig(tasks=("liver", "liver")))


def _save(array: np.ndarray, path, dtype=np.float32):
    """Write a (slices, rows, cols) array as a RAS NIfTI volume whose axial slices read back as ``array``."""
    from scenarios.organ_fixtures import save_nifti

    save_nifti(array, path, dtype=dtype)


def _volume(seed: int, size: int = 24, slices: int = 5):
    hu, labels = make_case(seed, size=size, slices=slices)
    return hu, labels


@pytest.fixture
def labelmap_root(tmp_path):
    """A BTCV-like folder: imagesTr/labelsTr, ids 1 = liver, 2 = spleen, 3 = aorta (phantom organs renamed)."""
    names = {"liver": 1, "spleen": 2, "aorta": 3}
    for i in range(5):
        hu, labels = _volume(i)
        raw = np.zeros_like(labels)
        for name, lid in names.items():
            raw[labels == 1 + ORGAN_NAMES.index(name)] = lid
        _save(hu, tmp_path / "data" / "imagesTr" / f"case{i}_0000.nii.gz")
        _save(raw, tmp_path / "data" / "labelsTr" / f"case{i}.nii.gz", np.uint8)
    (tmp_path / "p.yaml").write_text(
        "layout: labelmap\nlabels: {liver: 1, spleen: 2, aorta: 3}\ntasks: [[liver, spleen], [aorta]]\n")
    return tmp_path


def test_read_case_keeps_orientation_and_ids(labelmap_root):
    protocol = organ_nifti.load_protocol(str(labelmap_root / "p.yaml"))
    cases = organ_nifti.find_cases(labelmap_root / "data", protocol)
    assert [c.case for c in cases] == [f"case{i}" for i in range(5)]
    vol = organ_nifti.load_case(cases[2], protocol, {"liver": 1, "spleen": 2, "aorta": 3}, spacing=None)
    image, labels = vol.image, vol.labels
    hu, phantom = _volume(2)
    np.testing.assert_allclose(image, window(hu), atol=1e-5)  # the protocol's default window, -200..300 HU
    np.testing.assert_array_equal(labels == 1, phantom == 1 + ORGAN_NAMES.index("liver"))
    assert vol.spacing == (1.0, 1.0, 1.0)
    x, y = organ_nifti.to_slices(image, labels, 16, keep=np.array([1, 3]))
    assert x.shape == (2, 1, 16, 16) and y.shape == (2, 16, 16) and set(y.unique().tolist()) <= {0, 1, 2, 3}


def test_organ_nifti_scenario_builds_tasks_from_disk(labelmap_root):
    cfg = OrganNiftiConfig(root=str(labelmap_root / "data"), protocol=str(labelmap_root / "p.yaml"), image_size=16,
                           patch=4, test_fraction=0.2, model="slice2d", spacing="native")
    scenario = OrganNifti(cfg)
    tasks = scenario.tasks()
    assert [t.meta["organs"] for t in tasks] == [["liver", "spleen"], ["aorta"]]
    assert tasks[0].classes == (1, 2) and tasks[1].classes == (3,)
    train_cases = [set(torch.unique(t.train.case).tolist()) for t in tasks]
    test_cases = set(torch.unique(tasks[0].test.case).tolist())
    assert train_cases[0].isdisjoint(train_cases[1]) and test_cases.isdisjoint(train_cases[0] | train_cases[1])
    assert set(torch.unique(tasks[1].train.y).tolist()) == {0, 3}  # partial labels: only the task's organ
    model = scenario.build_model(None)
    assert model.predict({"x": tasks[0].test.x[:2]}, None).shape == (2, 4, 16, 16)


def test_totalseg_layout_reads_one_mask_per_organ(tmp_path):
    hu, labels = _volume(0)
    for case in ("s0001", "s0002", "s0003"):
        _save(hu, tmp_path / case / "ct.nii.gz")
        for name in ("liver", "aorta"):
            _save((labels == 1 + ORGAN_NAMES.index(name)).astype(np.uint8), tmp_path / case / "segmentations" / f"{name}.nii.gz", np.uint8)
    (tmp_path / "ts.yaml").write_text("layout: totalseg\ntasks: [[liver], [aorta]]\n")
    protocol = organ_nifti.load_protocol(str(tmp_path / "ts.yaml"))
    cases = organ_nifti.find_cases(tmp_path, protocol)
    assert [c.case for c in cases] == ["s0001", "s0002", "s0003"]
    read = organ_nifti.load_case(cases[0], protocol, {"liver": 1, "aorta": 2}, spacing=None).labels
    np.testing.assert_array_equal(read == 2, labels == 1 + ORGAN_NAMES.index("aorta"))


def test_bundled_protocols_and_clear_errors(tmp_path):
    btcv = organ_nifti.load_protocol("btcv")
    assert [len(t) for t in btcv.tasks] == [6, 3, 4] and btcv.labels["liver"] == 6
    assert [len(t) for t in organ_nifti.load_protocol("amos").tasks] == [5, 5, 5]
    assert organ_nifti.load_protocol("totalseg").layout == "totalseg"
    with pytest.raises(ValueError, match="bundled: amos, btcv, totalseg"):
        organ_nifti.load_protocol("nope")
    with pytest.raises(ConfigError, match=r"scenario\.root"):
        OrganNifti(OrganNiftiConfig()).tasks()
    with pytest.raises(ConfigError, match="not found; download"):
        OrganNifti(OrganNiftiConfig(root=str(tmp_path / "missing"))).tasks()
    with pytest.raises(ConfigError, match="no cases found"):
        OrganNifti(OrganNiftiConfig(root=str(tmp_path))).tasks()
