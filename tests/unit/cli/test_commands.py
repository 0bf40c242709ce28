"""The command line without a fleet: ``fleetbench`` (and ``inv`` in the checkout) parsed and run
for real, with the four stages replaced by a recorder. What each stage is handed (the spawn file,
the hosts, the ssh settings, the runs directory, the format), the exit status each outcome earns,
and the chains refused before any stage runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabfile import stages
from fabfile.session import forget_sessions
from tests.unit.cli.harness import REPO, SPAWN, Stages, fleetbench, inv

INVENTORY_SPAWN = REPO / "tests" / "data" / "spawn" / "good" / "inventory.toml"


# -- the shared options: given once, for every task -------------------------------------------

def test_options_before_the_task_names_reach_every_stage_of_the_chain(fake: Stages, capsys) -> None:
    code, _, err = fleetbench(capsys, "--spawn", "other.toml", "--servers", "s1, s2", "--agents", "a1",
                              "--ssh-config", "lab_config", "deploy", "bench", "collect")
    assert code == 0, err
    assert fake.names() == ["deploy", "bench", "fetch", "collect"]
    for stage in ("deploy", "bench", "fetch"):
        got = fake.of(stage)
        assert got["spawn"] == "other.toml"
        assert got["hosts"] == (["s1", "s2"], ["a1"])
        assert got["ssh_files"][0] == Path("lab_config")


def test_each_task_flag_still_works_for_a_single_task(fake: Stages, capsys) -> None:
    code, _, err = fleetbench(capsys, "deploy", "--spawn", "other.toml", "--servers", "x1,x2,x3", "--agents", "y1",
                              "--force", "--direct-push", "--bundled-python")
    assert code == 0, err
    got = fake.of("deploy")
    assert (got["spawn"], got["hosts"], got["force"], got["direct_push"], got["bundled"]) == \
        ("other.toml", (["x1", "x2", "x3"], ["y1"]), True, True, True)


def test_the_project_file_then_the_environment_then_the_core_flags(fake: Stages, capsys, monkeypatch) -> None:
    Path("fleetbench.yaml").write_text("fleetbench:\n  spawn: other.toml\n  servers: f1,f2\n  agents: f3\n")
    assert fleetbench(capsys, "deploy")[0] == 0
    assert (fake.of("deploy")["spawn"], fake.of("deploy")["hosts"]) == ("other.toml", (["f1", "f2"], ["f3"]))
    fake.calls.clear()
    forget_sessions()
    monkeypatch.setenv("INVOKE_FLEETBENCH_SPAWN", "spawn.toml")
    assert fleetbench(capsys, "deploy")[0] == 0
    assert (fake.of("deploy")["spawn"], fake.of("deploy")["hosts"]) == ("spawn.toml", (["f1", "f2"], ["f3"]))
    fake.calls.clear()
    forget_sessions()
    assert fleetbench(capsys, "--spawn", "other.toml", "--agents", "c1", "deploy")[0] == 0
    assert (fake.of("deploy")["spawn"], fake.of("deploy")["hosts"]) == ("other.toml", (["f1", "f2"], ["c1"]))


def test_the_checkouts_inv_reads_the_environment_too(fake: Stages, capsys, monkeypatch) -> None:
    monkeypatch.setenv("INVOKE_FLEETBENCH_SPAWN", "other.toml")
    code, out, err = inv(capsys, "check")
    assert code == 0, err
    assert out.startswith("other.toml: ok (3 server hosts, 2 agent hosts, 3 benchmarks)")


def test_check_takes_the_ssh_options_of_every_task(fake: Stages, capsys) -> None:
    code, out, err = inv(capsys, "check", "--ssh-config", "lab_config", "--accept-new-host-keys",
                         "--servers", "a,b,c", "--agents", "d")
    assert code == 0, err
    assert out.startswith("spawn.toml: ok (3 server hosts, 1 agent hosts, 3 benchmarks)")


# -- chains refused before anything runs --------------------------------------------------------

@pytest.mark.parametrize("run", [fleetbench, inv], ids=["fleetbench", "inv"])
def test_a_chain_on_two_spawn_files_is_refused_before_any_stage(fake: Stages, capsys, run) -> None:
    code, _, err = run(capsys, "bench", "collect", "--spawn", "other.toml")
    assert code == 1
    assert fake.calls == []
    assert err.startswith("bench collect refused: bench would take --spawn spawn.toml and collect other.toml")


def test_a_chain_on_two_fleets_is_refused_naming_both(fake: Stages, capsys) -> None:
    code, _, err = fleetbench(capsys, "--servers", "a,b,c", "--agents", "d", "deploy", "bench", "--agents", "e")
    assert code == 1 and fake.calls == []
    assert "deploy would take --agents d and bench e" in err


def test_collect_after_tasks_given_their_hosts_is_no_conflict(fake: Stages, capsys) -> None:
    hosts = ["--servers", "s1,s2,s3", "--agents", "a1"]
    code, _, err = inv(capsys, "deploy", *hosts, "bench", *hosts, "collect", "--format", "json")
    assert code == 0, err
    assert fake.names() == ["deploy", "bench", "fetch", "collect"]
    assert fake.of("fetch")["hosts"] == (None, None)  # the run's own hosts


def test_hosts_given_to_collect_alone_are_refused_not_unknown(fake: Stages, capsys) -> None:
    code, _, err = inv(capsys, "bench", "collect", "--spawn", "spawn.toml", "--servers", "s1,s2,s3")
    assert code == 1 and fake.calls == []
    assert err.startswith("bench collect refused: bench would take --servers the spawn file's [hosts] and collect "
                          "s1,s2,s3"), err


def test_a_core_flag_repeated_on_a_task_with_the_same_value_is_no_conflict(fake: Stages, capsys) -> None:
    code, _, err = fleetbench(capsys, "--spawn", "other.toml", "deploy", "bench", "--spawn", "./other.toml")
    assert code == 0, err
    assert fake.names() == ["deploy", "bench"]


def test_tasks_that_read_no_spawn_file_join_any_chain(fake: Stages, capsys) -> None:
    code, out, err = fleetbench(capsys, "--spawn", "other.toml", "--runs-dir", "elsewhere", "collect", "runs")
    assert code == 0, err
    assert fake.of("collect")["runs_dir"] == Path.cwd() / "elsewhere"
    assert f"no runs yet under {Path.cwd() / 'elsewhere'}/" in out


# -- formats ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["simple", "github", "csv", "json"])
def test_collect_hands_its_format_and_detail_to_the_stage(fake: Stages, capsys, fmt: str) -> None:
    code, _, err = fleetbench(capsys, "collect", "--format", fmt, "--detail", "--run", "r7")
    assert code == 0, err
    assert fake.of("fetch")["run"] == "r7"
    assert {k: fake.of("collect")[k] for k in ("format", "detail", "run")} == {"format": fmt, "detail": True,
                                                                               "run": "r7"}


@pytest.mark.parametrize("task", ["collect", "report", "runs", "attach"])
def test_an_unknown_format_exits_1_before_anything_runs(fake: Stages, capsys, task: str) -> None:
    code, _, err = fleetbench(capsys, "deploy", task, "--format", "xml")
    assert code == 1 and fake.calls == []
    assert err.strip() == f"{task} failed: --format 'xml': one of simple, github, csv, json"


def test_compare_refuses_an_unknown_format(fake: Stages, capsys) -> None:
    code, _, err = fleetbench(capsys, "compare", "a", "b", "--format", "yaml")
    assert code == 1 and "compare failed: --format 'yaml'" in err


def test_runs_lists_as_csv_under_the_runs_dir(fake: Stages, capsys, tmp_path: Path) -> None:
    code, out, err = fleetbench(capsys, "--runs-dir", str(tmp_path / "store"), "runs", "--format", "csv")
    assert code == 0, err
    assert out.splitlines() == ["time,run,name,status"]  # no runs yet: the header change-point tools read


# -- exit statuses ------------------------------------------------------------------------------

FAILED_EXPECTATION = {"run_id": "r1", "status": "ok",
                      "benchmarks": [{"name": "set", "expectations": [{"expect": "p99 < 1ms", "passed": False}]}]}


@pytest.mark.parametrize(("merged", "flags", "code", "message"), [
    ({"run_id": "r1", "status": "ok", "benchmarks": []}, [], 0, ""),
    ({"run_id": "r1", "status": "partial", "benchmarks": []}, [], 1, "run r1 is partial: see the failures above"),
    ({"run_id": "r1", "status": "partial", "benchmarks": []}, ["--allow-partial"], 0, ""),
    (FAILED_EXPECTATION, [], 3, "run r1: 1 expectation(s) failed"),
    ({**FAILED_EXPECTATION, "status": "failed"}, ["--allow-partial"], 3, "run r1: 1 expectation(s) failed"),
], ids=["ok", "agents-failed", "allowed", "expectation", "allowed-but-expectation"])
@pytest.mark.parametrize("task", ["collect", "spawn"])
def test_exit_status_of_a_run(fake: Stages, capsys, merged, flags, code, message, task) -> None:
    fake.merged = merged
    got, _, err = fleetbench(capsys, task, *flags)
    assert got == code, err
    assert err.strip() == message
    if task == "spawn":  # the servers are taken down whatever the verdict
        assert fake.names() == ["deploy", "bench", "fetch", "collect", "down"]


def test_spawn_with_keep_up_leaves_the_servers_and_detach_returns_at_once(fake: Stages, capsys) -> None:
    assert fleetbench(capsys, "spawn", "--keep-up")[0] == 0
    assert "down" not in fake.names()
    fake.calls.clear()
    assert fleetbench(capsys, "spawn", "--detach", "--lease", "60")[0] == 0
    assert fake.names() == ["deploy", "bench"]
    run_options = fake.of("bench")["options"]
    assert (run_options.detach, run_options.lease, run_options.spawn_detached) == (True, 60.0, True)


def test_attach_after_a_detached_spawn_takes_the_servers_down(fake: Stages, capsys) -> None:
    code, _, err = fleetbench(capsys, "attach", "--run", "r9")
    assert code == 0, err
    assert fake.names() == ["attach", "fetch", "collect", "down"]


def test_a_stage_failure_is_one_line_and_exit_1(fake: Stages, capsys, monkeypatch) -> None:
    from fabfile.errors import PipelineError

    def no_deployment(s, run_options):
        raise PipelineError("nothing is deployed: run `inv deploy` first")

    monkeypatch.setattr(stages.bench, "run", no_deployment)
    code, out, err = fleetbench(capsys, "bench")
    assert code == 1
    assert err.strip() == "bench failed: nothing is deployed: run `inv deploy` first"
    assert "Traceback" not in out + err


@pytest.mark.parametrize("task", ["check", "build", "deploy", "bench", "spawn"])
def test_a_bad_spawn_file_exits_1_before_any_stage(fake: Stages, capsys, task: str) -> None:
    Path("bad.toml").write_text(SPAWN.replace("iterations = 200000", "iterations = -1", 1))
    code, _, err = fleetbench(capsys, "--spawn", "bad.toml", task)
    assert code == 1
    assert err.startswith(f"{task} failed: ") and "benchmark[0].iterations" in err, err
    assert fake.calls == []


def test_a_missing_spawn_file_is_named(fake: Stages, capsys) -> None:
    code, _, err = fleetbench(capsys, "check", "--spawn", "nope.toml")
    assert (code, err.strip()) == (1, "check failed: nope.toml: cannot read: No such file or directory")


def test_one_host_list_with_an_inventory_spawn_file_is_named_by_its_option(fake: Stages, capsys) -> None:
    code, _, err = fleetbench(capsys, "check", "--spawn", str(INVENTORY_SPAWN), "--servers", "a")
    assert code == 1
    assert "--servers: the spawn file's hosts come from inventory; give --agents as well" in err


def test_an_empty_host_in_a_list_is_named_by_its_option(fake: Stages, capsys) -> None:
    code, _, err = fleetbench(capsys, "check", "--servers", "a,,b", "--agents", "c")
    assert code == 1 and "--servers[1]" in err, err


# -- the developer tools are the checkout's -------------------------------------------------------

@pytest.mark.parametrize("name", ["testbed.up", "demo", "perf"])
def test_the_installed_command_says_where_the_developer_tools_are(fake: Stages, capsys, name: str) -> None:
    code, _, err = fleetbench(capsys, name)
    assert code == 1
    assert err.startswith(f"{name} is a developer tool of fleetbench's source checkout")
    assert f"inv {name}" in err


def test_an_unknown_task_is_still_invokes_own_error(fake: Stages, capsys) -> None:
    code, _, err = fleetbench(capsys, "nonsense")
    assert code == 1 and "No idea what 'nonsense' is!" in err
