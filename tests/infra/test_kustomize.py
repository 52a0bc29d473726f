"""tests/infra/kustomize.py, the stand-in for `kustomize build`: the kustomize semantics the
overlays rely on (order of resources, components, patches and replacements; replacing a part of
a string; keeping a field's type; dropping local-config objects) and the refusals that keep a
feature it does not implement from passing unnoticed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.infra.kustomize import KustomizeError, build

KUSTOMIZATION = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
COMPONENT = "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n"
JOB = """\
apiVersion: ray.io/v1
kind: RayJob
metadata:
  name: job
spec:
  entrypoint: run name="job" workers="2" --quiet
  replicas: 2
  env: &env
    - {name: A, value: "1"}
  other: *env
"""
VALUES = """\
apiVersion: depthkd/v1
kind: RunValues
metadata:
  name: run
  annotations: {config.kubernetes.io/local-config: "true"}
spec: {name: big, workers: 8}
"""
REPLACEMENTS = """\
replacements:
  - source: {kind: RunValues, name: run, fieldPath: spec.name}
    targets:
      - select: {kind: RayJob}
        fieldPaths: [metadata.name]
      - select: {kind: RayJob}
        fieldPaths: [spec.entrypoint]
        options: {delimiter: '"', index: 1}
  - source: {kind: RunValues, name: run, fieldPath: spec.workers}
    targets:
      - select: {kind: RayJob}
        fieldPaths: [spec.replicas]
      - select: {kind: RayJob}
        fieldPaths: [spec.entrypoint]
        options: {delimiter: '"', index: 3}
"""


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def _tree(tmp_path: Path, overlay: str, component: str = REPLACEMENTS) -> Path:
    return _write(
        tmp_path,
        {
            "base/kustomization.yaml": KUSTOMIZATION + "resources: [job.yaml]\n",
            "base/job.yaml": JOB,
            "component/kustomization.yaml": COMPONENT + component,
            "overlay/values.yaml": VALUES,
            "overlay/kustomization.yaml": KUSTOMIZATION + overlay,
        },
    )


def test_a_component_fills_in_the_overlays_values_and_the_values_are_dropped(tmp_path) -> None:
    root = _tree(tmp_path, "resources: [../base, values.yaml]\ncomponents: [../component]\n")
    (job,) = build(root / "overlay")
    assert job["metadata"]["name"] == "big"
    assert job["spec"]["entrypoint"] == 'run name="big" workers="8" --quiet'
    assert job["spec"]["replicas"] == 8
    kinds = [o["kind"] for o in build(root / "overlay", keep_local=True)]
    assert kinds == ["RayJob", "RunValues"]


def test_a_value_keeps_the_type_of_the_field_it_replaces(tmp_path) -> None:
    # kustomize v5 copies the text and keeps the target's tag: "8" into an integer stays 8
    root = _tree(tmp_path, "resources: [../base, values.yaml]\ncomponents: [../component]\n")
    (tmp_path / "overlay/values.yaml").write_text(VALUES.replace("workers: 8", 'workers: "8"'))
    (job,) = build(root / "overlay")
    assert job["spec"]["replicas"] == 8
    (tmp_path / "overlay/values.yaml").write_text(VALUES.replace("workers: 8", "workers: many"))
    with pytest.raises(KustomizeError, match="'many' into an integer field"):
        build(root / "overlay")


def test_an_index_past_the_end_appends_as_kustomize_does(tmp_path) -> None:
    # why the entrypoints keep their quoted values in a fixed order: a missing one is not an
    # error in kustomize, the value lands at the end of the command line
    component = REPLACEMENTS.replace("index: 3", "index: 9")
    root = _tree(
        tmp_path, "resources: [../base, values.yaml]\ncomponents: [../component]\n", component
    )
    (job,) = build(root / "overlay")
    assert job["spec"]["entrypoint"] == 'run name="big" workers="2" --quiet"8'


def test_the_overlays_own_patches_run_after_its_components(tmp_path) -> None:
    overlay = """\
    resources: [../base, values.yaml]
    components: [../component]
    patches:
      - target: {kind: RayJob}
        patch: |-
          - {op: test, path: /metadata/name, value: big}
          - {op: replace, path: /spec/replicas, value: 1}
          - {op: add, path: /spec/env/-, value: {name: B, value: "2"}}
          - {op: remove, path: /spec/entrypoint}
    """
    root = _tree(tmp_path, textwrap.dedent(overlay))
    (job,) = build(root / "overlay")
    assert job["spec"]["replicas"] == 1 and "entrypoint" not in job["spec"]
    # the anchored list was copied on reading: the patch reached one of its two uses only
    assert [e["name"] for e in job["spec"]["env"]] == ["A", "B"]
    assert [e["name"] for e in job["spec"]["other"]] == ["A"]


def test_a_failed_test_operation_stops_the_build(tmp_path) -> None:
    patch = "'[{op: test, path: /spec/replicas, value: 5}]'"
    overlay = f"resources: [../base]\npatches:\n  - target: {{kind: RayJob}}\n    patch: {patch}\n"
    root = _tree(tmp_path, overlay)
    with pytest.raises(KustomizeError, match="test failed, found 2"):
        build(root / "overlay")


@pytest.mark.parametrize(
    ("overlay", "match"),
    [
        ("resources: [../base]\nnameSuffix: -2\n", "not supported here: nameSuffix"),
        ("resources: [../base/job.yaml]\n", "outside .* \\(load restrictor\\)"),
        ("resources: [../base, ../base]\n", "RayJob 'job' defined twice"),
        ("resources: [../base]\ncomponents: [../base]\n", "expected kind Component"),
        (
            "resources: [../base]\npatches:\n  - target: {kind: RayJob}\n    patch: 'spec: {}'\n",
            "only JSON 6902 patches",
        ),
    ],
    ids=["name-suffix", "file-outside-root", "duplicate", "base-as-component", "strategic-merge"],
)
def test_what_kustomize_refuses_or_this_renderer_lacks_is_an_error(
    tmp_path, overlay: str, match: str
) -> None:
    root = _tree(tmp_path, overlay)
    with pytest.raises(KustomizeError, match=match):
        build(root / "overlay")


def test_a_replacement_needs_every_step_of_its_field_path(tmp_path) -> None:
    component = REPLACEMENTS.replace("fieldPaths: [spec.replicas]", "fieldPaths: [spec.replica]")
    root = _tree(
        tmp_path, "resources: [../base, values.yaml]\ncomponents: [../component]\n", component
    )
    with pytest.raises(KustomizeError, match="no field 'replica'"):
        build(root / "overlay")
