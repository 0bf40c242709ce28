"""Testbed images, the pure parts: --image parsing, recipes and their cache keys, the image
host's pid 1 and sshd drop-in, failure messages, what hosts.json keeps (no root needed)."""

from __future__ import annotations

import dataclasses
import os
import tarfile

import pytest

from devtools.testbed import Testbed, TestbedError, plan_hosts
from devtools.testbed import images as img
from devtools.testbed.imagehost import drop_in_text, image_host_script, includes_drop_ins, sshd_argv

# ---- parsing --image ---------------------------------------------------------------------------


def test_parse_image_overrides():
    assert img.parse_image_overrides(["tb3=debian11", " *=minimal ", "tb4=/srv/root fs.tar.gz"]) == {
        "tb3": "debian11", "*": "minimal", "tb4": "/srv/root fs.tar.gz"}
    assert img.parse_image_overrides("tb1=debian13") == {"tb1": "debian13"}
    assert img.parse_image_overrides([]) == {}


@pytest.mark.parametrize(("value", "says"), [
    ("debian11", "expected HOST=IMAGE"),
    ("=debian11", "no host name"),
    ("tb3=", "no image after '='.*debian11, debian13, debian12-arm64, minimal"),
    ("TB3=debian11", "'TB3' is not a testbed host name"),
    ("tb03=debian11", "'tb03' is not a testbed host name"),
])
def test_parse_image_overrides_refuses(value, says):
    with pytest.raises(TestbedError, match=says):
        img.parse_image_overrides([value])


def test_parse_image_overrides_twice():
    with pytest.raises(TestbedError, match="--image for 'tb2' given twice"):
        img.parse_image_overrides(["tb2=debian11", "tb2=debian13"])


def test_resolve_images_star_own_and_unknown(tmp_path):
    plans = plan_hosts("tb", 0, 3)
    got = img.resolve_images(plans, {"*": "minimal", "tb2": "debian11", "tb3": str(tmp_path)})
    assert {n: s.label for n, s in got.items()} == {"tb1": "minimal", "tb2": "debian11", "tb3": str(tmp_path)}
    assert got["tb2"].recipe is img.RECIPES["debian11"] and got["tb3"].recipe is None
    assert set(img.resolve_images(plans, {"tb2": "debian13"})) == {"tb2"}  # the others: no image
    with pytest.raises(TestbedError, match="'tb7': no such host .*tb1..tb3"):
        img.resolve_images(plans, {"tb7": "debian11"})
    with pytest.raises(TestbedError, match="--image for tb2: no image recipe 'debian99'.*recipes: debian11"):
        img.resolve_images(plans, {"tb2": "debian99"})
    with pytest.raises(TestbedError, match="image /nonexistent/rootfs does not exist"):
        img.resolve_images(plans, {"*": "/nonexistent/rootfs"})


# ---- recipes and cache keys -------------------------------------------------------------------


def test_recipes_have_what_fleetbench_runs():
    assert set(img.RECIPES) >= {"debian11", "debian13", "debian12-arm64", "minimal"}
    for r in img.RECIPES.values():
        assert {"openssh-server", "procps", "iproute2"} <= set(r.packages), r.name
        assert ("python3" in r.packages) == (r.python is not None), r.name
        assert r.mirror.startswith("http") and r.mirror.endswith("/debian")
    by = img.RECIPES
    assert (by["debian11"].suite, by["debian11"].python) == ("bullseye", "3.9")
    assert (by["debian13"].suite, by["debian13"].python) == ("trixie", "3.13")
    assert (by["debian12-arm64"].suite, by["debian12-arm64"].arch, by["debian12-arm64"].python) == (
        "bookworm", "arm64", "3.11")
    assert by["minimal"].python is None and "python3" not in by["minimal"].packages


def test_cache_key_is_the_recipe_content_not_its_name():
    r = img.RECIPES["debian11"]
    assert r.key() == r.key() and len(r.key()) == 16
    assert dataclasses.replace(r, name="renamed").key() == r.key()
    assert dataclasses.replace(r, packages=tuple(reversed(r.packages))).key() == r.key()  # order is not content
    for change in ({"suite": "bookworm"}, {"arch": "arm64"}, {"packages": (*r.packages, "curl")},
                   {"mirror": "http://mirror.example/debian"}):
        assert dataclasses.replace(r, **change).key() != r.key(), change
    assert len({x.key() for x in img.RECIPES.values()}) == len(img.RECIPES)


def test_debootstrap_argv():
    r = img.RECIPES["debian12-arm64"]
    assert r.debootstrap_argv("/c/rootfs", foreign=True) == [
        "debootstrap", "--variant=minbase", "--include=openssh-server,python3,procps,iproute2", "--arch=arm64",
        "--foreign", "bookworm", "/c/rootfs", img.MIRROR]
    assert "--foreign" not in img.RECIPES["debian11"].debootstrap_argv("/c/rootfs", foreign=False)


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.delenv(img.CACHE_ENV, raising=False)
    assert img.cache_dir() == img.DEFAULT_CACHE
    monkeypatch.setenv(img.CACHE_ENV, str(tmp_path))
    assert img.cache_dir() == tmp_path


def test_cached_entry_is_reused_without_building(monkeypatch, tmp_path):
    r = img.RECIPES["debian13"]
    entry = tmp_path / f"debian13-{r.key()}"
    (entry / "rootfs").mkdir(parents=True)
    (entry / "image.json").write_text('{"python": "3.13"}')
    monkeypatch.setattr(img, "build_recipe", lambda *a: pytest.fail("a cached recipe must not be rebuilt"))
    got = img.ensure_recipe(r, tmp_path)
    assert (got.rootfs, got.built, got.python) == (str(entry / "rootfs"), False, "3.13")


def test_unfinished_entry_is_rebuilt_and_a_failure_leaves_nothing(monkeypatch, tmp_path):
    r = img.RECIPES["minimal"]
    (tmp_path / f"minimal-{r.key()}" / "rootfs").mkdir(parents=True)  # no image.json: a build that died

    def fail(recipe, work):
        (work / "rootfs" / "etc").mkdir(parents=True)
        raise TestbedError("image recipe minimal: debootstrap failed")

    monkeypatch.setattr(img, "build_recipe", fail)
    with pytest.raises(TestbedError, match="debootstrap failed"):
        img.ensure_recipe(r, tmp_path)
    assert not (tmp_path / f".minimal-{r.key()}.building").exists()


def test_failure_message_names_the_package_and_the_log_tail():
    output = ("I: Retrieving InRelease\nI: Checking Release signature\n"
              "E: Couldn't find these debs: fleetbench-no-such-package\n")
    msg = img.failure_message(img.RECIPES["debian11"], "debootstrap", 1, output, "")
    assert msg.startswith("image recipe debian11 (bullseye amd64): debootstrap failed (exit 1):"
                          " E: Couldn't find these debs: fleetbench-no-such-package")
    assert "log tail:" in msg and "Checking Release signature" in msg
    msg = img.failure_message(img.RECIPES["debian12-arm64"], "debootstrap --second-stage", 1, "",
                              "dpkg: error processing package openssh-server (--configure)\n")
    assert "--second-stage failed (exit 1)" in msg and "processing package openssh-server" in msg


# ---- path images ------------------------------------------------------------------------------


def _rootfs(path, sshd=True, python="3.12"):
    (path / "usr/sbin").mkdir(parents=True)
    (path / "usr/bin").mkdir(parents=True)
    if sshd:
        (path / "usr/sbin/sshd").write_text("")
    if python:
        (path / "usr/bin" / f"python{python}").write_text("")
    (path / "usr/bin/python3.9-config").write_text("")
    return path


def test_directory_image_used_in_place_and_one_without_sshd_refused(tmp_path):
    good = _rootfs(tmp_path / "good")
    got = img.ensure_image(img.ImageSpec(str(good), None))
    assert (got.rootfs, got.built, got.key, got.python) == (str(good), False, "", "3.12")
    bad = _rootfs(tmp_path / "bad", sshd=False, python=None)
    with pytest.raises(TestbedError, match=f"image {bad} has no /usr/sbin/sshd"):
        img.ensure_image(img.ImageSpec(str(bad), None))


def test_tarball_image_unpacked_once_by_content(monkeypatch, tmp_path):
    monkeypatch.setenv(img.CACHE_ENV, str(tmp_path / "cache"))
    tree = _rootfs(tmp_path / "tree")
    tarball = tmp_path / "root.tar.gz"
    with tarfile.open(tarball, "w:gz") as tf:
        tf.add(tree, arcname=".")
    first = img.ensure_image(img.ImageSpec(str(tarball), None))
    assert first.built and os.path.isfile(os.path.join(first.rootfs, "usr/sbin/sshd")) and first.python == "3.12"
    again = img.ensure_image(img.ImageSpec(str(tarball), None))
    assert (again.built, again.rootfs) == (False, first.rootfs)
    no_sshd = tmp_path / "nosshd.tar"
    with tarfile.open(no_sshd, "w") as tf:
        tf.add(_rootfs(tmp_path / "t2", sshd=False), arcname=".")
    with pytest.raises(TestbedError, match=f"image {no_sshd} has no /usr/sbin/sshd"):
        img.ensure_image(img.ImageSpec(str(no_sshd), None))
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == [
        os.path.basename(os.path.dirname(first.rootfs))]


# ---- the image host's pid 1 and sshd ----------------------------------------------------------


def test_drop_in_sets_only_address_and_keys():
    text = drop_in_text("10.213.0.13", "/run/fleetbench-testbed/tb/tb3/sshd")
    settings = [ln.split()[0] for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert settings == ["ListenAddress", "HostKey", "AuthorizedKeysFile"]
    assert "ListenAddress 10.213.0.13:22" in text
    assert "AuthorizedKeysFile /run/fleetbench-testbed/tb/tb3/sshd/authorized_keys" in text


def test_sshd_argv_carries_the_host_marker_and_options_only_without_drop_ins():
    mount = "/run/fleetbench-testbed/tb/tb3/sshd"
    assert sshd_argv(mount, "10.213.0.13", True) == ["/usr/sbin/sshd", "-D", "-E", f"{mount}/sshd.log"]
    assert "-o" in sshd_argv(mount, "10.213.0.13", False)
    assert includes_drop_ins("Include /etc/ssh/sshd_config.d/*.conf\nPort 22\n")
    assert not includes_drop_ins("#Include /etc/ssh/sshd_config.d/*.conf\nPort 22\n")


def test_image_host_script_order():
    script = image_host_script(host_dir="/p/.testbed/hosts/tb3", image_dir="/run/fb/tb/tb3/image",
                               lower="/var/cache/fleetbench/images/debian11-x/rootfs",
                               mount="/run/fb/tb/tb3/sshd", etc_hosts="/p/.testbed/etc_hosts",
                               resolv_conf="/p/.testbed/resolv.conf", hostname="tb3",
                               sshd=["/usr/sbin/sshd", "-D", "-E", "/run/fb/tb/tb3/sshd/sshd.log"])
    lines = script.splitlines()
    root = "/run/fb/tb/tb3/image/root"

    def at(fragment: str) -> int:
        return next(i for i, ln in enumerate(lines) if fragment in ln)

    assert at("mount -t tmpfs -o mode=755 tmpfs /run/fb/tb/tb3/image") < at("mount -t overlay") < at(
        f"{root}/proc") < at("devpts") < at(f"mount --bind /p/.testbed/hosts/tb3 {root}/run/fb/tb/tb3/sshd")
    assert "lowerdir=/var/cache/fleetbench/images/debian11-x/rootfs,upperdir=/run/fb/tb/tb3/image/upper" in script
    assert f"--bind /p/.testbed/etc_hosts {root}/etc/hosts" in script
    assert lines[-1] == f"exec chroot {root} /usr/sbin/sshd -D -E /run/fb/tb/tb3/sshd/sshd.log"
    with pytest.raises(TestbedError, match="may not contain"):
        image_host_script(host_dir="/h", image_dir="/i", lower="/a:b", mount="/m", etc_hosts="/e",
                          resolv_conf="/r", hostname="tb1", sshd=["/usr/sbin/sshd"])


# ---- what hosts.json keeps, and up's refusals ------------------------------------------------


def test_image_record_and_match():
    image = img.Image("minimal", "abc", "/c/minimal-abc/rootfs", False, 0.0, None)
    fields = img.image_record_fields(image)
    assert fields["python"] == "" and fields["image"]["name"] == "minimal"  # type: ignore[index]
    assert img.image_matches(fields, image)
    assert not img.image_matches(fields, None) and not img.image_matches({}, image)
    assert img.image_matches({}, None)
    assert not img.image_matches(fields, dataclasses.replace(image, key="other"))


def test_up_refuses_python_and_image_for_one_host_and_a_login_user(monkeypatch, tmp_path):
    monkeypatch.setattr(Testbed, "_preflight", lambda self, **kw: None)
    monkeypatch.setattr(Testbed, "_lock", lambda self: pytest.fail("must fail before touching anything"))
    monkeypatch.setattr(img, "ensure_image", lambda *a: pytest.fail("must fail before building anything"))
    tb = Testbed(tmp_path / ".testbed", prefix="tu", subnet=252)
    with pytest.raises(TestbedError, match="tu2 has both a python override and an image"):
        tb.up(3, {"tu2": "/usr/bin/python3"}, images={"tu2": "debian11"})
    with pytest.raises(TestbedError, match="no image recipe 'debian10'"):
        tb.up(3, images={"*": "debian10"})


def test_up_refuses_images_with_a_login_user(monkeypatch, tmp_path):
    monkeypatch.setattr(Testbed, "_preflight", lambda self, **kw: None)
    monkeypatch.setattr(Testbed, "_lock", lambda self: pytest.fail("must fail before touching anything"))
    tb = Testbed(tmp_path / ".testbed", prefix="tu", subnet=252)
    tb.user = object()  # type: ignore[assignment]  # any login user: only whether there is one matters
    with pytest.raises(TestbedError, match="--image is not supported with a login user"):
        tb.up(2, images={"tu1": "debian11"})
