"""Deployment (deploy/, knative/): the checks of ./taskw deploy:check catch what a cluster
would refuse or run differently from the local stack, and ./taskw deploy runs the real
commands in order. ./taskw deploy:check itself runs the checks over the real tree (the
`test` task); these tests prove each check fails on the mistake it is for."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

from broker.manifests import load
from deploy import overlays, project, smoke, stage
from deploy.__main__ import main
from stack import services

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "knative" / "base"
SECRETS = ROOT / "knative" / "secrets"
DEPLOYABLES = [p.name for p in stage.projects(ROOT)]


# -- func.yaml -----------------------------------------------------------------------------

def _func_yaml(tmp_path: Path, edit: dict[str, object] | None = None) -> Path:
    func = project.read(ROOT / "functions" / "sign-tx" / "func.yaml")
    func.update(edit or {})
    path = tmp_path / "func.yaml"
    path.write_text(yaml.safe_dump(func))
    return path


def _check_func(path: Path) -> list[str]:
    built = overlays.build(ROOT / "knative" / "overlays" / "dev")
    return project.check(ROOT, "sign-tx", path, project.secret_templates(SECRETS),
                         overlays.configmaps(built))


def test_given_the_sign_tx_func_yaml_when_checked_then_no_problem(tmp_path):
    assert _check_func(_func_yaml(tmp_path)) == []


def test_given_a_func_yaml_without_scale_and_resources_when_checked_then_each_is_named(tmp_path):
    func = project.read(ROOT / "functions" / "sign-tx" / "func.yaml")
    func["deploy"]["options"] = {}
    problems = "\n".join(_check_func(_func_yaml(tmp_path, {"deploy": func["deploy"]})))

    for missing in ("scale.min", "scale.max", "scale.target", "requests.cpu", "limits.memory",
                    "limits.concurrency"):
        assert missing in problems


def test_given_a_field_funcs_schema_does_not_know_when_checked_then_it_is_refused(tmp_path):
    problems = _check_func(_func_yaml(tmp_path, {"deployy": {}}))

    assert any("deployy" in p for p in problems)


def test_given_env_references_to_unknown_secrets_and_keys_when_checked_then_each_is_named(
        tmp_path):
    envs = [{"name": "A", "value": "{{ secret:no-such-secret:url }}"},
            {"name": "B", "value": "{{ secret:eventworks-db-sign-tx:password }}"},
            {"name": "C", "value": "{{ configmap:eventworks-config:etcd-endpoint }}"},
            {"name": "D", "value": "{{ secrets:eventworks-db-sign-tx:url }}"}]
    problems = "\n".join(_check_func(_func_yaml(tmp_path, {"run": {"envs": envs}})))

    assert "A: no secret 'no-such-secret'" in problems
    assert "B: secret 'eventworks-db-sign-tx' has no key 'password'" in problems
    assert "C: configmap 'eventworks-config' has no key 'etcd-endpoint'" in problems
    assert "D: '{{ secrets:" in problems


def test_given_env_references_when_a_pod_environment_is_made_then_configmaps_are_read_and_secrets_stand_in(  # noqa: E501
        tmp_path):
    envs = [{"name": "DATABASE_URL", "value": "{{ secret:eventworks-db-sign-tx:url }}"},
            {"name": "ETCD_ENDPOINTS", "value": "{{ configmap:eventworks-config:etcd }}"},
            {"name": "PLAIN", "value": "1"}]
    path = _func_yaml(tmp_path, {"run": {"envs": envs}})

    env = smoke.environment(path, {"eventworks-config": {"etcd": "http://etcd:2379"}})

    assert env == {"DATABASE_URL": smoke.SAMPLE_SECRETS["url"],
                   "ETCD_ENDPOINTS": "http://etcd:2379", "PLAIN": "1"}


# -- Secret templates ----------------------------------------------------------------------

def test_given_a_secret_template_with_a_value_when_checked_then_it_is_refused(tmp_path):
    shutil.copy(SECRETS / "github-secret.yaml", tmp_path)
    text = (tmp_path / "github-secret.yaml").read_text()
    (tmp_path / "github-secret.yaml").write_text(
        text.replace('secretToken: ""', 'secretToken: "hunter2"'))

    problems = overlays.secret_template_problems(tmp_path)

    assert len(problems) == 1
    assert "secretToken: a template holds no values" in problems[0]


def test_given_every_secret_a_manifest_or_func_yaml_names_then_a_template_exists():
    templates = project.secret_templates(SECRETS)
    named = {(r.name, r.key) for p in stage.projects(ROOT)
             for r in project.env_refs(project.read(p.source / "func.yaml"))[0]
             if r.kind == "secret"}
    wired = load(BASE, overlays.resolver(DEPLOYABLES))
    named |= {(ref.name, ref.key) for source in wired.github_sources
              for ref in (source.access_token, source.secret_token)}

    assert {(n, k) for n, k in named if k not in templates.get(n, frozenset())} == set()


# -- overlays ------------------------------------------------------------------------------

def _overlay(tmp_path: Path, patches: list[dict[str, object]],
             extra: dict[str, str] | None = None) -> Path:
    """A copy of knative/base and an overlay of it with `patches` (and extra files)."""
    shutil.copytree(BASE, tmp_path / "base")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    resources = ["../base", *(extra or {})]
    for name, text in (extra or {}).items():
        (overlay / name).write_text(text)
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(
        {"resources": resources, "patches": patches}))
    return overlay


def _patch(kind: str, name: str, op: str, path: str, value: object) -> dict[str, object]:
    return {"target": {"kind": kind, "name": name},
            "patch": yaml.safe_dump([{"op": op, "path": path, "value": value}])}


def test_given_the_base_in_an_overlay_when_checked_then_no_problem(tmp_path):
    assert overlays.check(_overlay(tmp_path, []), BASE, DEPLOYABLES) == []


def test_given_a_trigger_field_knatives_crd_does_not_declare_when_checked_then_it_is_named(
        tmp_path):
    overlay = _overlay(tmp_path, [
        _patch("Trigger", "sign-tx-requests", "add", "/spec/delivery/retries", 3)])

    problems = overlays.check(overlay, BASE, DEPLOYABLES)

    assert any("Trigger sign-tx-requests: spec.delivery: Additional properties are not "
               "allowed ('retries' was unexpected)" in p for p in problems)


def test_given_a_network_policy_typo_when_checked_then_kubernetes_schema_refuses_it(tmp_path):
    overlay = _overlay(tmp_path, [
        _patch("NetworkPolicy", "default-deny-ingress", "add", "/spec/ingres", [])])

    problems = overlays.check(overlay, BASE, DEPLOYABLES)

    assert any("NetworkPolicy default-deny-ingress" in p and "ingres" in p for p in problems)


def test_given_a_trigger_whose_subscriber_is_not_deployed_when_checked_then_it_is_named(
        tmp_path):
    overlay = _overlay(tmp_path, [
        _patch("Trigger", "verify-tx-signed", "replace", "/spec/subscriber/ref/name",
               "verify-txs")])

    problems = overlays.check(overlay, BASE, DEPLOYABLES)

    assert any("no Service named 'verify-txs'" in p for p in problems)


def test_given_a_sink_binding_whose_subject_is_not_deployed_when_checked_then_it_is_named(
        tmp_path):
    overlay = _overlay(tmp_path, [
        _patch("SinkBinding", "todo-crud-outbox", "replace", "/spec/subject/name", "todo")])

    problems = overlays.check(overlay, BASE, DEPLOYABLES)

    assert any("SinkBinding todo-crud-outbox: spec.subject names Service todo" in p
               for p in problems)


def test_given_an_overlay_that_changes_a_trigger_when_checked_then_it_differs_from_the_local_one(
        tmp_path):
    overlay = _overlay(tmp_path, [
        _patch("Trigger", "sign-tx-requests", "replace", "/spec/delivery/retry", 3)])

    problems = overlays.check(overlay, BASE, DEPLOYABLES)

    assert any("Trigger sign-tx-requests: delivery differ" in p for p in problems)


def test_given_an_overlay_that_adds_a_trigger_when_checked_then_it_is_not_in_the_local_stack(
        tmp_path):
    extra = {"extra.yaml": yaml.safe_dump({
        "apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
        "metadata": {"name": "cluster-only", "namespace": "eventworks"},
        "spec": {"broker": "default", "subscriber": {"ref": {
            "apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "sign-tx"}}}})}

    problems = overlays.check(_overlay(tmp_path, [], extra), BASE, DEPLOYABLES)

    assert any("Trigger cluster-only: only in the overlay" in p for p in problems)


def test_given_a_knative_kind_with_no_known_schema_when_checked_then_it_is_refused():
    doc = {"apiVersion": "sources.knative.dev/v1", "kind": "ContainerSource",
           "metadata": {"name": "x"}, "spec": {}}

    assert overlays.schema_problems(doc) == [
        "ContainerSource x: no schema known for ContainerSource (sources.knative.dev/v1)"]


# -- the local stack runs the same wiring --------------------------------------------------

def test_given_the_outbox_sink_bindings_when_the_stack_maps_them_then_todo_and_accounting_get_k_sink():  # noqa: E501
    wired = load(BASE, overlays.resolver(DEPLOYABLES))
    broker_url = "http://127.0.0.1:1/eventworks/default"

    sinks = services.sink_urls(wired.sink_bindings, DEPLOYABLES, broker_url)

    assert sinks["todo-crud"] == sinks["accrue-payment"] == broker_url
    assert set(sinks) <= set(DEPLOYABLES)


# -- staging and the deploy commands -------------------------------------------------------

def test_given_a_function_when_staged_then_eventing_is_vendored_and_tests_left_out(tmp_path):
    sign_tx = next(p for p in stage.projects(ROOT) if p.name == "sign-tx")

    staged = stage.stage(ROOT, sign_tx, tmp_path)

    edge = (staged / "eventing" / "edge.py").read_text()
    assert edge == (ROOT / "eventing" / "edge.py").read_text()
    assert (staged / "function" / "func.py").is_file()
    assert (staged / "func.yaml").is_file()
    assert (staged / "pyproject.toml").is_file()
    assert not (staged / "tests").exists()
    assert not list(staged.rglob("__pycache__"))


def test_given_the_batch_reader_when_staged_then_it_is_an_http_function_of_batch_knative(
        tmp_path):
    batch = next(p for p in stage.projects(ROOT) if p.name == "batch-reader")

    staged = stage.stage(ROOT, batch, tmp_path)

    assert batch.invoke == "http"
    assert "from batch.knative import new" in (staged / "function" / "__init__.py").read_text()
    for package in ("batch", "eventing", "broker"):
        assert (staged / package / "__init__.py").is_file()
    assert project.read(staged / "func.yaml")["invoke"] == "http"


def test_given_an_env_and_registry_when_deployed_dry_then_namespace_functions_then_overlay(
        capsys):
    assert main(["apply", "--env", "dev", "--registry", "registry.test/me", "--dry-run"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(f"apply -f {BASE / 'namespace.yaml'}")
    deploys = lines[1:-1]
    assert [line.split("--path ")[1].split()[0].rsplit("/", 1)[1] for line in deploys] == (
        DEPLOYABLES)
    assert all(line.startswith("kn func deploy --path ") and
               line.endswith("--registry registry.test/me") for line in deploys)
    assert lines[-1].endswith(f"apply -k {ROOT / 'knative' / 'overlays' / 'dev'}")


def test_given_an_unknown_env_when_deployed_then_it_is_refused(capsys):
    assert main(["apply", "--env", "staging", "--registry", "r.test", "--dry-run"]) == 2
    assert "no overlay 'staging'" in capsys.readouterr().out


@pytest.mark.parametrize("name", DEPLOYABLES)
def test_given_each_deployable_then_its_source_is_where_its_func_yaml_names_it(name):
    found = next(p for p in stage.projects(ROOT) if p.name == name)
    assert project.read(found.source / "func.yaml")["name"] == name
    assert sys.version_info >= (3, 11)


def test_given_a_trigger_without_an_order_annotation_when_checked_then_it_is_named(tmp_path):
    overlay = _overlay(tmp_path, [_patch(
        "Trigger", "verify-tx-pledges", "remove",
        "/metadata/annotations/kafka.eventing.knative.dev~1delivery.order", None)])

    problems = overlays.check(overlay, BASE, DEPLOYABLES)

    assert any("Trigger verify-tx-pledges: set kafka.eventing.knative.dev/delivery.order" in p
               for p in problems)


def test_given_a_broker_without_a_dead_letter_sink_when_checked_then_every_trigger_is_named(
        tmp_path):
    overlay = _overlay(tmp_path, [_patch(
        "Broker", "default", "remove", "/spec/delivery/deadLetterSink", None)])

    problems = overlays.check(overlay, BASE, DEPLOYABLES)

    assert any("Trigger sign-tx-requests: lacks a dead-letter sink" in p for p in problems)


# -- the KafkaSource of knative/base in the running stack ----------------------------------

def test_given_a_cloudevent_record_on_the_tx_topic_when_the_stack_runs_then_it_reaches_the_broker(
        stack_env):
    import time
    import uuid

    from kafka import KafkaProducer

    from tests.topic import Watch

    bootstrap = stack_env["KAFKA_BOOTSTRAP_SERVERS"]
    event_id = f"deploy-{uuid.uuid4()}"
    watch = Watch(bootstrap, "knative-broker-eventworks-default")
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        # Binary content mode: ce_* headers; a type no Trigger routes, so nothing else runs.
        producer.send("eventworks-tx-requests", value=b'{"probe": true}', headers=[
            ("ce_specversion", b"1.0"), ("ce_id", event_id.encode()),
            ("ce_source", b"/eventworks/deploy-test"), ("ce_type", b"dev.eventworks.deploy.probe"),
            ("content-type", b"application/json")]).get(timeout=10)
        deadline = time.monotonic() + 60
        seen: list[str] = []
        while event_id not in seen and time.monotonic() < deadline:
            seen += [s.id for s in watch.poll(200)]
    finally:
        producer.close()
        watch.close()

    assert event_id in seen


# -- the batch reader as a func HTTP function (batch/knative.py) ---------------------------

def test_given_no_database_url_when_the_batch_reader_function_starts_then_it_refuses():
    from batch.knative import new

    function = new()
    with pytest.raises(RuntimeError, match="settings are invalid"):
        function.start({"BROKER_URL": "http://broker.test/eventworks/default"})
    assert function.ready() == (False, "starting")


def test_given_settings_when_the_batch_reader_function_starts_then_it_is_ready_and_stops():
    from batch.knative import new

    function = new()
    function.start({"DATABASE_URL": "postgresql://deploy-check@127.0.0.1:9/eventworks",
                    "BROKER_URL": "http://127.0.0.1:9/eventworks/default"})
    try:
        assert function.ready() == (True, "ready")
        assert function.alive() == (True, "alive")
    finally:
        function.stop()
    assert function.ready() == (False, "starting")  # stopped: the reader is closed


# -- the public edge: the gateway and who may post to the Broker --------------------------

def _policy_from(overlay_docs: list[dict[str, object]]) -> list[object]:
    [policy] = [d for d in overlay_docs if d["kind"] == "EventPolicy"]
    return policy["spec"]["from"]  # type: ignore[index, no-any-return]


def test_given_the_base_when_built_then_an_event_policy_admits_exactly_the_brokers_senders():
    docs = overlays.build(ROOT / "knative" / "overlays" / "dev")

    admitted = {(f["ref"]["kind"], f["ref"]["name"]) for f in _policy_from(docs)}  # type: ignore[index]

    assert ("SinkBinding", "gateway") in admitted
    assert admitted == {(kind, name) for _, kind, name in overlays._broker_senders(docs)}
    assert overlays.event_policy_problems(docs) == []


def test_given_no_event_policy_when_checked_then_the_unguarded_broker_is_named(tmp_path):
    overlay = _overlay(tmp_path, [{"patch": yaml.safe_dump({
        "$patch": "delete", "apiVersion": "eventing.knative.dev/v1alpha1",
        "kind": "EventPolicy", "metadata": {"name": "broker-senders"}})}])

    problems = overlays.check(overlay, BASE, DEPLOYABLES)

    assert any("no EventPolicy names the Broker" in p for p in problems), problems


@pytest.mark.parametrize("anyone", [{"sub": "system:serviceaccount:eventworks:*"},
                                    {"sub": "system:serviceaccount:eventworks:default"}])
def test_given_an_event_policy_that_admits_a_subject_when_checked_then_it_is_refused(
        tmp_path, anyone):
    overlay = _overlay(tmp_path, [_patch("EventPolicy", "broker-senders", "add", "/spec/from/-",
                                         anyone)])

    problems = overlays.check(overlay, BASE, DEPLOYABLES)

    assert any(f"admits the subject {anyone['sub']!r}" in p for p in problems), problems


def test_given_a_sender_the_event_policy_leaves_out_when_checked_then_it_is_named(tmp_path):
    overlay = _overlay(tmp_path, [_patch("EventPolicy", "broker-senders", "remove",
                                         "/spec/from/0", None)])

    problems = overlays.check(overlay, BASE, DEPLOYABLES)

    assert "dev: SinkBinding gateway: sends to the Broker, but no EventPolicy admits it" \
        in [p.replace(f"{overlay.name}: ", "dev: ", 1) for p in problems]


def test_given_an_event_policy_schema_violation_when_checked_then_knatives_crd_names_it(
        tmp_path):
    overlay = _overlay(tmp_path, [_patch("EventPolicy", "broker-senders", "add",
                                         "/spec/allowEveryone", True)])

    problems = overlays.check(overlay, BASE, DEPLOYABLES)

    assert any("EventPolicy broker-senders: spec" in p and "allowEveryone" in p
               for p in problems), problems


def test_given_the_github_source_component_when_an_overlay_opts_in_then_it_checks_and_is_admitted(
        tmp_path):
    shutil.copytree(ROOT / "knative" / "components", tmp_path / "components")
    overlay = _overlay(tmp_path, [])
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    kustomization["components"] = ["../components/github-source"]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))

    problems = overlays.check(overlay, BASE, DEPLOYABLES)
    docs = overlays.build(overlay)

    assert problems == []
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "GitHubSource"] == ["github"]
    assert {"kind": "GitHubSource", "name": "github"}.items() <= \
        _policy_from(docs)[-1]["ref"].items()  # type: ignore[index]


def test_given_the_gateway_when_staged_then_an_http_function_carrying_the_page_and_the_edge(
        tmp_path):
    gateway = next(p for p in stage.projects(ROOT) if p.name == "gateway")

    staged = stage.stage(ROOT, gateway, tmp_path)

    assert gateway.invoke == "http"
    assert (staged / "function" / "page" / "index.html").read_bytes() == \
        (ROOT / "signing-page" / "index.html").read_bytes()
    assert (staged / "broker" / "gateway.py").is_file()
    assert (staged / "eventing" / "auth.py").is_file()
    assert not (staged / "tests").exists()
    assert project.read(staged / "func.yaml")["invoke"] == "http"


def test_given_the_gateway_func_yaml_when_checked_then_no_problem_and_no_cluster_local_label():
    built = overlays.build(ROOT / "knative" / "overlays" / "dev")
    func_yaml = ROOT / "gateway" / "func.yaml"

    problems = project.check(ROOT, "gateway", func_yaml, project.secret_templates(SECRETS),
                             overlays.configmaps(built))

    assert problems == []
    labels = project.read(func_yaml)["deploy"].get("labels") or []
    assert {"key": "networking.knative.dev/visibility", "value": "cluster-local"} not in labels


def test_given_the_staged_gateway_when_installed_fresh_and_served_then_it_refuses_tokenless_events_and_serves_the_page(  # noqa: E501
        tmp_path):
    gateway = next(p for p in stage.projects(ROOT) if p.name == "gateway")
    staged = stage.stage(ROOT, gateway, tmp_path / "staged")
    built = overlays.build(ROOT / "knative" / "overlays" / "dev")
    data = {d["metadata"]["name"]: d.get("data") or {} for d in built if d["kind"] == "ConfigMap"}

    result = smoke.smoke(staged, gateway, smoke.environment(staged / "func.yaml", data), tmp_path)

    assert result.problems == ()
