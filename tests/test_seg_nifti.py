"""organ-nifti as the data is distributed: MONAI loading with grid checks, BTCV/AMOS/TotalSegmentator layouts, bad
inputs as one line and exit 2, Dice/HD95 from MONAI, and the 3D PVT end to end. Volumes are written here with nibabel
(scenarios.organ_fixtures, the same writer as scripts/make_organ_fixtures.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cl_suite import cli, protocol_card
from cl_suite.api import MissingData
from scenarios import organ_nifti
from scenarios.organ_fixtures import save_nifti, write_fixture
from scenarios.organ_phantoms import ORGAN_NAMES, make_case
from scenarios.organ_segmentation import OrganNifti, OrganNiftiConfig

nib = pytest.importorskip("nibabel")
pytest.importorskip("monai")

LIVER = 1 + ORGAN_NAMES.index("liver")


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("organ")
    return {name: write_fixture(root / name, name, cases=5, size=32, slices=16) for name in ("btcv", "amos", "totalseg")}


def _scenario(root, protocol, **kw) -> OrganNifti:
    return OrganNifti(OrganNiftiConfig(root=str(root), protocol=protocol, **kw), tiny=True)


def _cli_run(tmp_path, root, protocol, *extra) -> int:
    return cli.main(["run", "--scenario", "organ-nifti", "--strategy", "loco-lora", "--tiny", "--results",
                     str(tmp_path / "results"), "--set", f"scenario.root={root}", "--set",
                     f"scenario.protocol={protocol}", *extra])  # fmt: skip


def test_btcv_img_label_naming_is_paired(fixtures):
    protocol = organ_nifti.load_protocol("btcv")
    cases = organ_nifti.find_cases(fixtures["btcv"], protocol)
    assert [(c.image.name, c.labels.name) for c in cases][:2] == [("img0001.nii.gz", "label0001.nii.gz"),
                                                                   ("img0002.nii.gz", "label0002.nii.gz")]
    assert len(cases) == 5
    vol = organ_nifti.load_case(cases[0], protocol, {"liver": 1}, spacing=protocol.spacing)
    _, phantom = make_case(0, size=32, slices=16)
    np.testing.assert_array_equal(vol.labels == 1, phantom == LIVER)  # btcv id 6 = liver reaches suite id 1
    assert vol.spacing == (2.0, 1.5, 1.5)  # (slice, row, column) mm: the protocol's 1.5 x 1.5 x 2.0 (x, y, z)


def test_btcv_synapse_archive_folders_are_found(fixtures, tmp_path):
    import shutil

    shutil.copytree(fixtures["btcv"] / "imagesTr", tmp_path / "img")  # RawData/Training/img + label
    shutil.copytree(fixtures["btcv"] / "labelsTr", tmp_path / "label")
    cases = organ_nifti.find_cases(tmp_path, organ_nifti.load_protocol("btcv"))
    assert [c.image.parent.name for c in cases] == ["img"] * 5 and cases[4].image.name == "img0005.nii.gz"


def test_amos_mri_cases_are_left_out(fixtures):
    protocol = organ_nifti.load_protocol("amos")
    cases = organ_nifti.find_cases(fixtures["amos"], protocol)
    ct, other = organ_nifti.split_modality(cases, protocol)
    assert [c.case for c in other] == ["amos_0507", "amos_0508"]  # AMOS22: ids >= 500 are MRI
    assert len(ct) == 5 and all(int(c.case[5:]) < 500 for c in ct)
    per_task, test = _scenario(fixtures["amos"], "amos").selected_cases()
    assert not {f.case for f in [*test, *(f for t in per_task for f in t)]} & {"amos_0507", "amos_0508"}


def test_label_stored_in_lps_is_reoriented_not_mixed(tmp_path):
    hu, labels = make_case(3, size=24, slices=6)
    save_nifti(hu, tmp_path / "imagesTr" / "c1.nii.gz")
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps[:2, 3] = 23  # the same voxel grid, described from the other corner: x and y axes reversed
    flipped = (labels == LIVER).astype(np.uint8)[:, ::-1, ::-1]  # the data stored in that order
    save_nifti(flipped, tmp_path / "labelsTr" / "c1.nii.gz", dtype=np.uint8, affine=lps)
    (tmp_path / "p.yaml").write_text("layout: labelmap\nlabels: {liver: 1}\ntasks: [[liver]]\n")
    protocol = organ_nifti.load_protocol(str(tmp_path / "p.yaml"))
    files = organ_nifti.find_cases(tmp_path, protocol)[0]
    organ_nifti.check_case(files, protocol, ["liver"], tolerance=1e-3, allow_missing=False)
    vol = organ_nifti.load_case(files, protocol, {"liver": 1}, spacing=None)
    np.testing.assert_array_equal(vol.labels == 1, labels == LIVER)


def test_label_on_another_grid_is_refused(tmp_path):
    hu, labels = make_case(3, size=24, slices=6)
    save_nifti(hu, tmp_path / "imagesTr" / "c1.nii.gz")
    save_nifti((labels == LIVER).astype(np.uint8), tmp_path / "labelsTr" / "c1.nii.gz", dtype=np.uint8,
               affine=np.diag([-1.0, -1.0, 1.0, 1.0]))  # LPS header, data not flipped: the grids do not coincide
    (tmp_path / "p.yaml").write_text("layout: labelmap\nlabels: {liver: 1}\ntasks: [[liver]]\n")
    protocol = organ_nifti.load_protocol(str(tmp_path / "p.yaml"))
    files = organ_nifti.find_cases(tmp_path, protocol)[0]
    with pytest.raises(organ_nifti.BadData, match="voxel grids disagree by up to 23 mm"):
        organ_nifti.check_case(files, protocol, ["liver"], tolerance=1e-3, allow_missing=False)
    with pytest.raises(organ_nifti.BadData, match="voxel grids disagree"):
        organ_nifti.load_case(files, protocol, {"liver": 1}, spacing=None)


def _copy_fixture(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_bad_inputs_are_one_line_and_exit_2_before_a_run_folder(fixtures, tmp_path, capsys):
    btcv = _copy_fixture(fixtures["btcv"], tmp_path / "btcv")
    _, labels = make_case(1, size=32, slices=16)
    save_nifti(labels[:-1].astype(np.uint8), btcv / "labelsTr" / "label0002.nii.gz", (1.5, 1.5, 2.0), np.uint8)
    assert _cli_run(tmp_path, btcv, "btcv") == 2
    err = capsys.readouterr().err.strip()
    assert "case label0002: label map has shape (32, 32, 15) in RAS, the image (32, 32, 16)" in err
    assert err.count("\n") == 0

    totalseg = _copy_fixture(fixtures["totalseg"], tmp_path / "ts")
    for case in totalseg.iterdir():
        (case / "segmentations" / "spleen.nii.gz").unlink()
    assert _cli_run(tmp_path, totalseg, "totalseg") == 2
    err = capsys.readouterr().err.strip()
    assert "no mask for spleen" in err and "allow_missing_masks" in err and err.count("\n") == 0
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("run.json"))
    scenario = _scenario(totalseg, "totalseg", allow_missing_masks=True, model="slice2d", image_size=16, patch=4)
    scenario.check_data()  # the switch lets it through (and is recorded in the run's config)

    with pytest.raises(MissingData, match=r"scenario\.root"):
        OrganNifti(OrganNiftiConfig()).check_data()


def test_describe_lists_each_protocols_organs_with_label_sources():
    card = protocol_card.build("organ-nifti", {"scenario.protocol": "btcv"})
    first = card["tasks"][0]
    assert first["organs"] == ["spleen", "kidney_right", "kidney_left", "gallbladder", "esophagus", "liver"]
    assert first["labels"][0] == "spleen: label id 1" and first["labels"][5] == "liver: label id 6"
    assert card["tasks"][2]["classes"] == [10, 11, 12, 13]
    amos = protocol_card.build("organ-nifti", {"scenario.protocol": "amos"})
    assert any("id numbers less than 500" in n for n in amos["notes"])
    ts = protocol_card.build("organ-nifti", {"scenario.protocol": "totalseg"})
    assert ts["tasks"][1]["labels"][5] == "heart: segmentations/heart.nii.gz"
    assert json.loads(protocol_card.to_json(card)) == card


def test_pvt3d_tasks_are_crops_for_training_and_whole_volumes_for_test(fixtures):
    scenario = _scenario(fixtures["btcv"], "btcv", pvt_dims=(8, 16, 16), pvt_depths=(1, 1, 1), decoder_depth=1,
                         samples_per_volume=2)  # fmt: skip
    tasks = scenario.tasks()
    item = tasks[0].train[0]
    assert item["x"].shape == (1, 32, 32, 32) and item["y"].shape == (32, 32, 32)  # 16 slices padded to the window
    whole = tasks[0].test[0]
    assert whole["x"].shape == (1, 16, 32, 32) and whole["spacing"].tolist() == [2.0, 1.5, 1.5]
    model = scenario.build_model(None)
    model.on_task_start(tasks[0])
    with torch.no_grad():
        out = model.predict({"x": whole["x"][None]}, None)  # sliding-window inference over the whole volume
    assert out.shape == (1, 1 + 9, 16, 32, 32)


def test_readme_protocol_table_agrees_with_describe():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for protocol in ("btcv", "amos", "totalseg"):
        rows = [line.split("|")[1:4] for line in readme.splitlines() if line.startswith(f"| {protocol} | ")]
        rows = [(int(task), [o.strip() for o in organs.split(",")]) for _, task, organs in rows if task.strip().isdigit()]
        card = protocol_card.build("organ-nifti", {"scenario.protocol": protocol})
        expected = []
        for i, task in enumerate(card["tasks"], 1):
            ids = [label.split(": label id ")[-1] for label in task["labels"]] if protocol != "totalseg" else None
            expected.append((i, [f"{o} {ids[k]}" if ids else o for k, o in enumerate(task["organs"])]))
        assert rows == expected, protocol
