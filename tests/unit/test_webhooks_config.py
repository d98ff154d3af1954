"""The ``webhooks:`` section: defaults, and errors that name the key path before any call to Capture."""

from __future__ import annotations

from typing import Any

import pytest

from service.settings import ConfigError, Settings, from_mapping
from service.webhooks_config import under_prefix

ENDPOINT = "https://hooks.example.com/webhooks/capture/v3"
CALLBACK = "https://hooks.example.com/webhooks/capture/legacy"
WEBHOOKS_API = {
    "base_url": "https://v1.api.us.janrain.com",
    "customer_id": "b18fc81d-457e-4a40-ac87-2b78bd946fa2",
    "client_id": "config-client",
    "client_secret": "config-secret",
}


def capture(**overrides: Any) -> dict[str, Any]:
    """A ``capture:`` section with the v3 subscription API."""
    return {
        "base_url": "https://myapp.us.janraincapture.com",
        "client_id": "api-client",
        "client_secret": "api-secret",
        "webhooks_api": WEBHOOKS_API,
        **overrides,
    }


def sub(title: str = "capture-relay all", **fields: Any) -> dict[str, Any]:
    """One declared subscription."""
    return {"title": title, "endpoint": ENDPOINT, "events": ["entityCreated"], **fields}


def hook(event_type: str = "update", **fields: Any) -> dict[str, Any]:
    """One declared legacy webhook."""
    attributes = {"attributes": ["email"]} if event_type.lower() == "update" else {}
    return {"callback": CALLBACK, "event_type": event_type, **attributes, **fields}


def config(
    v3: list[dict[str, Any]] | None = None,
    legacy: list[dict[str, Any]] | None = None,
    *,
    capture_section: dict[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """A config declaring ``v3`` subscriptions and/or ``legacy`` webhooks."""
    webhooks: dict[str, Any] = {}
    if v3 is not None:
        webhooks["v3"] = {"subscriptions": v3, **sections.pop("v3_extra", {})}
    if legacy is not None:
        webhooks["legacy"] = {"callback_prefix": "https://hooks.example.com/webhooks/", "webhooks": legacy}
    return {"capture": capture_section or capture(), "webhooks": webhooks, **sections}


def load(data: dict[str, Any]) -> Settings:
    return from_mapping(data, {})


def problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        from_mapping(data, {})
    return caught.value.problems


class TestDefaults:
    def test_no_section_declares_nothing(self) -> None:
        """Without webhooks: register has nothing to reconcile, and the other commands do not care."""
        settings = load({})

        assert (settings.webhooks.v3, settings.webhooks.legacy) == (None, None)

    def test_a_subscription_is_enabled_without_a_filter_and_managed_by_the_default_prefix(self) -> None:
        """enabled defaults to true, filter to none, the managed title prefix to capture-relay."""
        settings = load(config([sub(events="entityDeleted")]))

        v3 = settings.webhooks.v3
        assert v3 is not None
        assert v3.title_prefix == "capture-relay"
        [subscription] = v3.subscriptions
        assert (subscription.events, subscription.enabled, subscription.filter) == (["entityDeleted"], True, None)

    def test_legacy_event_types_are_read_in_any_case(self) -> None:
        """Capture's docs write ADD / UPDATE / DELETE; it stores them in lower case."""
        settings = load(config(legacy=[hook("UPDATE"), hook("Delete")]))

        legacy = settings.webhooks.legacy
        assert legacy is not None
        assert [(w.event_type, w.attributes, w.entity_type) for w in legacy.webhooks] == [
            ("update", ["email"], None),
            ("delete", None, None),
        ]

    def test_a_callback_with_credentials_under_the_prefix_is_managed(self) -> None:
        """Basic credentials in a callback URL do not take it out from under the prefix."""
        settings = load(config(legacy=[hook(callback="https://relay:pw@hooks.example.com/webhooks/capture/legacy")]))

        assert settings.webhooks.legacy is not None


class TestV3Errors:
    def test_duplicate_titles_name_the_later_one(self) -> None:
        """Titles are how subscriptions are matched, and Akamai keeps them unique."""
        data = config([sub("capture-relay a"), sub("capture-relay b"), sub("capture-relay c"), sub("capture-relay b")])

        assert problems(data) == [
            (
                "webhooks.v3.subscriptions[3].title",
                "'capture-relay b' is already the title of subscriptions[1]; Akamai requires unique titles, and "
                "register matches subscriptions by title",
            )
        ]

    @pytest.mark.parametrize(
        ("title", "problem"),
        [
            pytest.param("c", "string should have at least 2 characters", id="one-character"),
            pytest.param(
                "capture-relay " + "x" * 187, "string should have at most 200 characters", id="201-characters"
            ),
        ],
    )
    def test_a_title_has_2_to_200_characters(self, title: str, problem: str) -> None:
        """Akamai's limits on a title, checked before any call."""
        assert problems(config([sub(title)])) == [("webhooks.v3.subscriptions[0].title", problem)]

    def test_a_title_without_the_managed_prefix_is_refused(self) -> None:
        """--prune could never remove a declared subscription that lacks the marker."""
        [(path, problem)] = problems(config([sub("capture-relay ok"), sub("marketing")]))

        assert path == "webhooks.v3.subscriptions[1].title"
        assert "does not start with webhooks.v3.title_prefix 'capture-relay'" in problem
        assert "--prune could never remove it" in problem

    def test_a_custom_prefix_applies(self) -> None:
        """With title_prefix eu-relay, eu-relay titles are accepted and capture-relay ones are not."""
        data = config([sub("eu-relay all"), sub("capture-relay all")], v3_extra={"title_prefix": "eu-relay"})

        assert [path for path, _ in problems(data)] == ["webhooks.v3.subscriptions[1].title"]

    def test_events_must_be_akamai_subscription_events(self) -> None:
        """An unknown event is named with its index; test and legacy events are not subscribable."""
        assert problems(config([sub(events=["entityUpdated", "userCredentialUpdated"])])) == [
            (
                "webhooks.v3.subscriptions[0].events[1]",
                "input should be 'entityCreated', 'entityUpdated' or 'entityDeleted'",
            )
        ]

    def test_events_are_listed_once_and_at_least_one(self) -> None:
        """A repeated event and an empty list are both refused."""
        assert problems(
            config([sub(events=["entityUpdated", "entityUpdated"]), sub("capture-relay b", events=[])])
        ) == [
            ("webhooks.v3.subscriptions[0].events", "entityUpdated is listed more than once"),
            ("webhooks.v3.subscriptions[1].events", "list should have at least 1 item after validation, not 0"),
        ]

    @pytest.mark.parametrize(
        ("endpoint", "accepted"),
        [
            pytest.param("https://hooks.example.com/v3", True, id="https"),
            pytest.param("http://127.0.0.1:8000/webhooks/capture/v3", True, id="loopback-http"),
            pytest.param("http://hooks.example.com/v3", False, id="plain-http"),
            pytest.param("hooks.example.com/v3", False, id="no-scheme"),
        ],
    )
    def test_the_endpoint_is_https_except_on_loopback(self, endpoint: str, accepted: bool) -> None:
        """As every other URL of the config: plain http only for a receiver on this machine."""
        data = config([sub(endpoint=endpoint)])

        if accepted:
            assert load(data).webhooks.v3 is not None
        else:
            assert [path for path, _ in problems(data)] == ["webhooks.v3.subscriptions[0].endpoint"]

    def test_v3_needs_the_webhooks_api_credentials(self) -> None:
        """Subscriptions are managed with capture.webhooks_api's configuration client."""
        section = capture()
        del section["webhooks_api"]

        [(path, problem)] = problems(config([sub()], capture_section=section))

        assert path == "webhooks.v3"
        assert "configure capture.webhooks_api" in problem

    def test_an_unknown_key_lists_the_known_ones(self) -> None:
        """A misspelt key in a subscription is named with the keys allowed there."""
        assert problems(config([sub(enable=False)])) == [
            (
                "webhooks.v3.subscriptions[0].enable",
                "unknown key; known keys here: enabled, endpoint, events, filter, title",
            )
        ]


class TestLegacyErrors:
    def test_attributes_only_with_update(self) -> None:
        """Capture fires update webhooks on attribute changes; the other types take none."""
        data = config(legacy=[hook("add", attributes=["email"])])

        assert problems(data) == [
            ("webhooks.legacy.webhooks[0].attributes", "only allowed with event_type update, not add")
        ]

    def test_an_update_webhook_needs_its_attributes(self) -> None:
        """Capture requires the list for update webhooks."""
        data = config(legacy=[{"callback": CALLBACK, "event_type": "update"}])

        [(path, problem)] = problems(data)

        assert path == "webhooks.legacy.webhooks[0].attributes"
        assert problem.startswith("required with event_type update")

    def test_an_unknown_event_type_is_refused(self) -> None:
        """Only add, update and delete exist."""
        [(path, problem)] = problems(config(legacy=[hook("modify")]))

        assert (path, problem) == (
            "webhooks.legacy.webhooks[0].event_type",
            "input should be 'add', 'update' or 'delete'",
        )

    def test_the_same_webhook_twice_is_refused(self) -> None:
        """callback + event_type + entity_type identify a webhook; the default entity type counts as given."""
        data = config(
            legacy=[hook("add"), hook("add", entity_type="member")], capture_section=capture(entity_type="member")
        )

        [(path, problem)] = problems(data)

        assert path == "webhooks.legacy.webhooks[1]"
        assert "the same callback, event_type and entity_type as webhooks[0]" in problem

    @pytest.mark.parametrize(
        "callback",
        [
            pytest.param("https://crm.example.com/hook", id="other-host"),
            pytest.param("https://hooks.example.com.evil.test/webhooks/x", id="host-prefix"),
            pytest.param("https://hooks.example.com/webhooks-other/x", id="path-prefix"),
        ],
    )
    def test_a_callback_outside_the_prefix_is_refused(self, callback: str) -> None:
        """The callback prefix is matched on the origin and on path segments, not as text."""
        [(path, problem)] = problems(config(legacy=[hook(callback=callback)]))

        assert path == "webhooks.legacy.webhooks[0].callback"
        assert "not under webhooks.legacy.callback_prefix" in problem
        assert callback not in problem  # a callback may carry credentials: never repeated

    def test_legacy_needs_the_capture_section(self) -> None:
        """Legacy webhooks are managed through the Capture API."""
        data = {"webhooks": {"legacy": {"callback_prefix": "https://hooks.example.com/", "webhooks": [hook()]}}}

        [(path, problem)] = problems(data)

        assert path == "webhooks.legacy"
        assert "configure the capture: section" in problem

    def test_the_callback_prefix_is_required(self) -> None:
        """Without a marker --prune could not tell ours from anyone else's."""
        data = {"capture": capture(), "webhooks": {"legacy": {"webhooks": [hook()]}}}

        assert problems(data) == [("webhooks.legacy.callback_prefix", "field required")]


@pytest.mark.parametrize(
    ("url", "prefix", "under"),
    [
        ("https://h.example/a/b", "https://h.example/a", True),
        ("https://h.example/a/b", "https://h.example/a/", True),
        ("https://h.example/a", "https://h.example/a", True),
        ("https://h.example/a", "https://h.example", True),
        ("https://H.EXAMPLE/a", "https://h.example/", True),
        ("https://user:pw@h.example/a", "https://h.example/", True),
        ("https://h.example/ab", "https://h.example/a", False),
        ("https://h.example.evil/a", "https://h.example", False),
        ("http://h.example/a", "https://h.example", False),
        ("https://h.example:8443/a", "https://h.example", False),
    ],
)
def test_under_prefix(url: str, prefix: str, under: bool) -> None:
    """A URL is under a prefix on the same origin and at a path boundary."""
    assert under_prefix(url, prefix) is under
