"""The registration hook Job and CronJob, the capture-relay release they need, and what the
install notes say.
"""

from __future__ import annotations

import pytest

from service.settings import from_mapping
from tests.deploy.chart import LITERAL, render_error
from tests.deploy.conftest import CHART_DIR, REPO, Rendered, Renderer, Values, merged

DIGEST = "sha256:" + "0" * 64
# The first capture-relay with the `register` command the registration Job runs.
REGISTER_RELEASE: Values = {"image": {"tag": "0.2.0"}}


# --- Registration -----------------------------------------------------------------------------


def test_registration_hook_job(everything_render: Rendered) -> None:
    """A post-install/upgrade/rollback hook Job, replaced on each run, removed once it succeeds, bounded."""
    assert everything_render.values["image"] == merged(everything_render.values["image"], REGISTER_RELEASE["image"])
    job = everything_render.one("Job", "registration")
    assert job["metadata"]["annotations"] == {
        "helm.sh/hook": "post-install,post-upgrade,post-rollback",
        "helm.sh/hook-weight": "5",
        "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded",
    }
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (3, 600)
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["args"] == ["register", "--apply", "--prune"]


def test_registration_cron_job(everything_render: Rendered) -> None:
    """The optional CronJob reconciles on a schedule, never two at once, with its own args."""
    cron = everything_render.one("CronJob", "registration")["spec"]
    assert (cron["schedule"], cron["timeZone"], cron["concurrencyPolicy"]) == ("*/30 * * * *", "Etc/UTC", "Forbid")
    assert cron["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["register", "--apply"]


def test_registration_is_off_by_default(default_render: Rendered, render: Renderer) -> None:
    """No Job or CronJob until registration.enabled (the register command comes with 0.2.0)."""
    assert not default_render.has("Job")
    assert not default_render.has("CronJob")
    rendered = render({"registration": {"enabled": True}}, base=REGISTER_RELEASE)
    assert rendered.one("Job", "registration")["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "register",
        "--apply",
    ]
    assert not rendered.has("CronJob")


def test_notes_warn_about_a_config_without_sources(default_render: Rendered, everything_render: Rendered) -> None:
    """NOTES.txt tells the operator when `serve` would refuse to start."""
    assert "config.sources configures no webhook source" in default_render.notes
    assert "config.sources configures no webhook source" not in everything_render.notes
    assert "rq:queue:capture-events" in everything_render.notes


def test_the_install_notes_show_only_the_registration_subcommand(render: Renderer) -> None:
    """registration.args may carry anything (a token, a URL): the notes print the subcommand alone."""
    args = ["register", "--apply", "--token=" + LITERAL, "--prune"]
    rendered = render({"registration": {"enabled": True, "args": args}}, base=REGISTER_RELEASE)

    assert rendered.one("Job", "registration")["spec"]["template"]["spec"]["containers"][0]["args"] == args
    assert "`capture-relay register`" in rendered.notes
    assert "hunter2" not in rendered.notes
    assert "--apply" not in rendered.notes


# --- The register command's release -------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "version"),
    [
        pytest.param({"tag": "0.1.0"}, "0.1.0", id="tag"),
        pytest.param({"tag": "v0.1.9"}, "v0.1.9", id="v-prefix"),
        pytest.param({"tag": "0.1"}, "0.1", id="short"),
        pytest.param({"tag": "0.2.0-rc.1"}, "0.2.0-rc.1", id="pre-release-of-0.2.0"),
        pytest.param({"tag": "0.1.0", "digest": DIGEST}, "0.1.0", id="digest-with-its-tag"),
    ],
)
def test_registration_needs_a_release_with_the_register_command(render: Renderer, image: Values, version: str) -> None:
    """Before 0.2.0 there is no `register` command: the hook would fail every install and upgrade."""
    for registration in ({"enabled": True}, {"enabled": True, "cronJob": {"enabled": True}}):
        message = render_error(render, {"registration": registration, "image": image})
        assert (
            f"capture-relay {version} has no `register` command; leave registration.enabled off until a release"
            " that has it"
        ) in message


@pytest.mark.parametrize("tag", ["0.2.0", "0.2", "v0.2.1", "0.2.0+build.7", "0.10.0", "1.0.0"])
def test_registration_renders_from_0_2_0_on(render: Renderer, tag: str) -> None:
    """0.2.0 and later (compared as versions, not as text: 0.10.0 is later) render the hook, no warning."""
    rendered = render({"registration": {"enabled": True, "cronJob": {"enabled": True}}, "image": {"tag": tag}})

    assert rendered.has("Job", "registration")
    assert rendered.has("CronJob", "registration")
    assert "not a semantic" not in rendered.notes


@pytest.mark.parametrize(
    ("image", "shown"),
    [
        pytest.param({"tag": "latest"}, 'image.tag "latest"', id="latest"),
        pytest.param({"tag": "main-3f2a9c1"}, 'image.tag "main-3f2a9c1"', id="branch"),
        pytest.param({"tag": "0.2.0-01"}, 'image.tag "0.2.0-01"', id="not-quite-semver"),
        pytest.param({"digest": DIGEST}, "image.digest alone", id="digest-only"),
    ],
)
def test_registration_with_an_unversioned_image_renders_with_a_warning(
    render: Renderer, image: Values, shown: str
) -> None:
    """A version the chart cannot compare passes, and the install notes say what is at stake."""
    rendered = render({"registration": {"enabled": True}, "image": image})

    assert rendered.has("Job", "registration")
    notes = " ".join(rendered.notes.split())
    assert f"WARNING: the image version ({shown}) is not a semantic version" in notes
    assert "capture-relay 0.2.0 or later" in notes


def test_no_registration_section_is_promised_in_the_config() -> None:
    """The `webhooks:` section comes with `register` (0.2.0); an older capture-relay refuses it as an
    unknown key and would crash-loop every pod, so the chart does not tell operators to add it."""
    assert from_mapping({"redis_url": "redis://redis:6379/0", "webhooks": {}}, {}).webhooks.v3 is None
    texts = [CHART_DIR / "values.yaml", REPO / "docs" / "kubernetes.md", *sorted(CHART_DIR.glob("templates/*"))]
    for path in texts:
        assert "config.webhooks" not in path.read_text(encoding="utf-8"), path


def test_the_cron_job_name_leaves_room_for_the_job_suffix(render: Renderer) -> None:
    """The CronJob controller appends -<11 digits> to its Jobs: the CronJob name is 52 characters at most."""
    values = merged(REGISTER_RELEASE, {"registration": {"enabled": True, "cronJob": {"enabled": True}}})
    for fullname in ("f" * 60, "f" * 42 + "-" + "g" * 17, "capture-relay"):
        rendered = render(merged(values, {"fullnameOverride": fullname}))
        name = rendered.one("CronJob", "registration")["metadata"]["name"]
        assert len(name) <= 52, name
        assert name.endswith("-register")
        assert "--" not in name
        for obj in rendered.objects:
            assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]
    assert name == "capture-relay-register"
