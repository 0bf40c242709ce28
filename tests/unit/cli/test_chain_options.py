"""The options a chain shares, resolved as a task resolves them: its own flag, else the config's
``fleetbench`` tree, else the defaults; and the refusal of a chain whose tasks disagree."""

from __future__ import annotations

from pathlib import Path

import pytest
from invoke import Config
from invoke.exceptions import Exit

from fabfile.cli import options
from fabfile.cli.tasks import bench, collect, namespace, report

NOT_GIVEN = {"spawn": None, "servers": None, "agents": None, "ssh_config": None, "accept_new_host_keys": False}


def configured(**tree) -> Config:
    config = Config()
    config.load_collection({"fleetbench": {**options.DEFAULTS, **tree}})
    return config


def test_nothing_given_is_the_default_spawn_file_and_its_own_hosts() -> None:
    got = options.resolve(configured(), NOT_GIVEN)
    assert got == options.ChainOptions("spawn.toml", None, None, None, False)
    assert got.host_lists() == (None, None)


def test_a_bare_context_without_the_fleetbench_tree_gets_the_defaults() -> None:
    assert options.resolve(Config(), NOT_GIVEN).spawn == "spawn.toml"
    assert options.runs_dir(Config()) == "runs"


def test_the_config_gives_defaults_and_a_task_flag_overrides_them() -> None:
    config = configured(spawn="lab.toml", servers="s1, s2", agents=["a1"], ssh_config="~/lab_config",
                        accept_new_host_keys=True)
    got = options.resolve(config, NOT_GIVEN)
    assert got == options.ChainOptions("lab.toml", ("s1", "s2"), ("a1",), "~/lab_config", True)
    flagged = options.resolve(config, {**NOT_GIVEN, "spawn": "other.toml", "servers": "x"})
    assert (flagged.spawn, flagged.servers, flagged.agents) == ("other.toml", ("x",), ("a1",))


def test_environment_values_are_read_as_invoke_casts_them(monkeypatch) -> None:
    monkeypatch.setenv("INVOKE_FLEETBENCH_SPAWN", "env.toml")
    monkeypatch.setenv("INVOKE_FLEETBENCH_SERVERS", "e1,e2")
    monkeypatch.setenv("INVOKE_FLEETBENCH_ACCEPT_NEW_HOST_KEYS", "1")
    monkeypatch.setenv("INVOKE_FLEETBENCH_RUNS_DIR", "/data/runs")
    config = configured()
    config.load_shell_env()
    got = options.resolve(config, NOT_GIVEN)
    assert (got.spawn, got.servers, got.accept_new_host_keys) == ("env.toml", ("e1", "e2"), True)
    assert options.runs_dir(config) == "/data/runs"


@pytest.mark.parametrize("value", ["0", "false", "no", ""])
def test_a_false_word_for_accept_new_host_keys_is_false(value: str) -> None:
    assert options.resolve(configured(accept_new_host_keys=value), NOT_GIVEN).accept_new_host_keys is False


def test_hosts_of_the_wrong_type_are_named_by_their_config_key() -> None:
    with pytest.raises(Exit) as caught:
        options.resolve(configured(servers={"a": 1}), NOT_GIVEN)
    assert caught.value.code == 1 and "fleetbench.servers" in str(caught.value.message)


def chain(*tasks: tuple[str, dict]) -> list[tuple[str, options.ChainOptions]]:
    return [(name, options.resolve(configured(), {**NOT_GIVEN, **given})) for name, given in tasks]


def test_a_chain_that_agrees_passes() -> None:
    assert options.mismatch(chain(("deploy", {"spawn": "a.toml"}), ("bench", {"spawn": "./a.toml"}))) is None
    assert options.mismatch([]) is None
    options.refuse_mismatch(chain(("bench", {}), ("collect", {})))


def test_different_spawn_files_are_refused_naming_both_tasks_and_both_files() -> None:
    with pytest.raises(Exit) as caught:
        options.refuse_mismatch(chain(("bench", {}), ("collect", {"spawn": "my.toml"})))
    message = str(caught.value.message)
    assert caught.value.code == 1
    assert message.startswith("bench collect refused: bench would take --spawn spawn.toml and collect my.toml")
    assert "INVOKE_FLEETBENCH_SPAWN" in message and "before the task names" in message


@pytest.mark.parametrize(("key", "flag", "value", "shown"), [
    ("servers", "--servers", "a,b", "a,b"),
    ("agents", "--agents", "c", "c"),
    ("ssh_config", "--ssh-config", "lab_config", "lab_config"),
])
def test_different_hosts_or_ssh_configs_are_refused(key: str, flag: str, value: str, shown: str) -> None:
    why = options.mismatch(chain(("deploy", {key: value}), ("bench", {}), ("collect", {})))
    assert why is not None
    other = "the spawn file's [hosts]" if key != "ssh_config" else "none"
    assert why.startswith(f"deploy would take {flag} {shown} and bench {other}"), why


def test_a_task_acting_on_a_recorded_run_compares_its_host_lists_only_when_given() -> None:
    deployed = options.resolve(configured(), {**NOT_GIVEN, "servers": "a,b", "agents": "c"})
    collecting = options.resolve(configured(), NOT_GIVEN, recorded_run=True)
    assert set(collecting.compared()) == {"spawn", "ssh_config"}
    assert options.mismatch([("deploy", deployed), ("bench", deployed), ("collect", collecting)]) is None
    other_file = options.resolve(configured(), {**NOT_GIVEN, "spawn": "other.toml"}, recorded_run=True)
    why = options.mismatch([("collect", collecting), ("bench", deployed), ("status", other_file)])
    assert why is not None and why.startswith("collect would take --spawn spawn.toml and status other.toml")
    given_hosts = options.resolve(configured(), {**NOT_GIVEN, "servers": "x"}, recorded_run=True)
    why = options.mismatch([("bench", options.resolve(configured(), NOT_GIVEN)), ("collect", given_hosts)])
    assert why is not None and why.startswith("bench would take --servers the spawn file's [hosts] and collect x")


def test_a_host_key_accepted_by_one_task_does_not_split_the_chain() -> None:
    assert options.mismatch(chain(("deploy", {"accept_new_host_keys": True}), ("bench", {}))) is None


def test_a_relative_and_an_absolute_path_to_one_file_agree(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert options.mismatch(chain(("bench", {"spawn": "x.toml"}), ("collect", {"spawn": str(tmp_path / "x.toml")}))) \
        is None


def test_tasks_that_read_the_spawn_file_take_the_shared_options_and_the_others_do_not() -> None:
    takers = {name for name, t in namespace().tasks.items() if options.takes_shared(t)}
    assert takers == {"check", "build", "deploy", "bench", "status", "attach", "collect", "down", "spawn"}
    assert options.takes_shared(bench) and options.takes_shared(collect) and not options.takes_shared(report)


def test_an_unknown_format_is_refused() -> None:
    options.check_format("report", "github")
    with pytest.raises(Exit) as caught:
        options.check_format("report", "xml")
    assert caught.value.code == 1
    assert caught.value.message == "report failed: --format 'xml': one of simple, github, csv, json"
