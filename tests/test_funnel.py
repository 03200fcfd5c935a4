"""The funnel config: the shipped default, its derived vocabularies, every error a user can cause,
and a custom funnel that shares no name with the default one."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from funnelcast.features.events import EventDataError, validate_events
from funnelcast.features.funnel import (
    OTHER,
    ConfigError,
    FunnelConfig,
    config_from_dict,
    default_config_path,
    load_config,
)

DEFAULT_STAGE_TYPES = {
    "awareness": ["ad_impression", "ad_click", "search_visit", "social_visit", "blog_view"],
    "interest": ["newsletter_signup", "form_fill", "content_download", "inquiry"],
    "consideration": ["pricing_view", "product_comparison", "demo_request", "trial_request", "review_read", "cart_add"],
    "purchase": ["order"],
    "loyalty": ["repeat_order", "referral", "review_written", "loyalty_join"],
}
DEFAULT_OTHER_TYPES = [
    "support_ticket", "support_call", "email_sent", "email_opened", "outbound_call", "loyalty_offer", "subscription_cancelled",
]


@pytest.fixture()
def raw() -> dict:
    """The default funnel as a plain dict, to break one setting at a time."""
    return yaml.safe_load(default_config_path().read_text())


def _error(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    return str(info.value)


# ---- the default funnel ---------------------------------------------------------------------------

def test_default_config_loads(config: FunnelConfig) -> None:
    assert isinstance(config, FunnelConfig)
    assert config.name == "five-stage-journey"
    assert config.stage_names == tuple(DEFAULT_STAGE_TYPES)
    assert config.source_timezone is None
    assert config.unknown_event_types == "error"
    assert config.unknown_channels == "map_to_other"
    assert config.churn.applies_from_stage == "purchase"
    assert config.churn_stage_index == 3
    assert config.features.windows_days == [7, 30, 90]
    assert config.conversion.horizon_days == 30
    assert config.churn.horizon_days == 60


def test_load_config_without_a_path_is_the_shipped_file() -> None:
    assert load_config() == load_config(default_config_path())


def test_event_types_are_stage_types_in_journey_order_then_other_types(config: FunnelConfig) -> None:
    expected = tuple(et for types in DEFAULT_STAGE_TYPES.values() for et in types) + tuple(DEFAULT_OTHER_TYPES)
    assert config.event_types == expected
    # unknown types are an error in the default funnel, so 'other' is not in the vocabulary
    assert OTHER not in config.event_types


def test_event_types_end_with_other_under_map_to_other(raw: dict) -> None:
    raw["unknown_event_types"] = "map_to_other"
    cfg = config_from_dict(raw)
    assert cfg.event_types[-1] == OTHER
    assert cfg.event_types[:-1] == load_config().event_types


def test_stage_of_event_type(config: FunnelConfig) -> None:
    assert config.stage_of_event_type["ad_click"] == 0
    assert config.stage_of_event_type["inquiry"] == 1
    assert config.stage_of_event_type["cart_add"] == 2
    assert config.stage_of_event_type["order"] == 3
    assert config.stage_of_event_type["referral"] == 4
    assert "support_ticket" not in config.stage_of_event_type  # other types evidence no stage


def test_qualifying_event_types_exclude_outbound_and_churn_types(config: FunnelConfig) -> None:
    excluded = {"ad_impression", "email_sent", "outbound_call", "loyalty_offer", "subscription_cancelled"}
    assert set(config.outbound_event_types) | set(config.churn.churn_event_types) == excluded
    assert config.qualifying_event_types == tuple(et for et in config.event_types if et not in excluded)
    assert "email_opened" in config.qualifying_event_types  # the customer opening an email is their own activity
    assert "order" in config.qualifying_event_types


def test_explicit_qualifying_event_types_win(raw: dict) -> None:
    raw["churn"]["qualifying_event_types"] = ["order", "repeat_order"]
    assert config_from_dict(raw).qualifying_event_types == ("order", "repeat_order")


def test_conversion_targets_are_consecutive_stage_pairs(config: FunnelConfig) -> None:
    assert config.conversion_targets() == [
        ("awareness", "interest"),
        ("interest", "consideration"),
        ("consideration", "purchase"),
        ("purchase", "loyalty"),
    ]


def test_channel_names_end_with_other_under_default_policy(config: FunnelConfig) -> None:
    assert config.channel_names == ("search", "social", "referral", "direct", "email", "ads", "sales_call", OTHER)


def test_config_is_frozen(config: FunnelConfig) -> None:
    with pytest.raises(Exception, match="frozen"):
        config.name = "changed"  # type: ignore[misc]


# ---- every error a user can cause -----------------------------------------------------------------

def test_event_type_in_two_stages(raw: dict) -> None:
    raw["stages"][1]["event_types"].append("order")
    msg = _error(raw)
    assert re.search(r"event type 'order' evidences two stages \('interest' and 'purchase'\)", msg), msg


def test_event_type_in_a_stage_and_in_other_event_types(raw: dict) -> None:
    raw["other_event_types"].append("order")
    with pytest.raises(ConfigError, match=r"event type 'order' is listed in other_event_types and in stage 'purchase'"):
        config_from_dict(raw)


def test_repeated_stage_name(raw: dict) -> None:
    raw["stages"].append({"name": "purchase", "event_types": ["upsell"]})
    with pytest.raises(ConfigError, match=r"stage names repeat: \['purchase'\]"):
        config_from_dict(raw)


def test_other_is_a_reserved_event_type(raw: dict) -> None:
    raw["other_event_types"].append("other")
    with pytest.raises(ConfigError, match=r"'other' is reserved for unknown event types"):
        config_from_dict(raw)


def test_other_is_a_reserved_channel(raw: dict) -> None:
    raw["channels"]["other"] = "inbound"
    with pytest.raises(ConfigError, match=r"'other' is reserved for unknown channels"):
        config_from_dict(raw)


def test_unknown_event_type_in_event_groups(raw: dict) -> None:
    raw["event_groups"]["support"] = ["support_ticket", "fax"]
    with pytest.raises(ConfigError, match=r"event_groups\.support names event types no stage or other_event_types lists: \['fax'\]"):
        config_from_dict(raw)


def test_event_group_named_like_a_stage(raw: dict) -> None:
    raw["event_groups"]["purchase"] = ["order"]
    with pytest.raises(ConfigError, match=r"event group 'purchase' has the same name as a stage"):
        config_from_dict(raw)


def test_unknown_event_type_in_purchase_event_types(raw: dict) -> None:
    raw["purchase_event_types"] = ["order", "refund"]
    with pytest.raises(ConfigError, match=r"purchase_event_types names event types no stage or other_event_types lists: \['refund'\]"):
        config_from_dict(raw)


def test_unknown_event_type_in_outbound_event_types(raw: dict) -> None:
    raw["outbound_event_types"] = ["email_sent", "carrier_pigeon"]
    with pytest.raises(ConfigError, match=r"outbound_event_types names event types no stage or other_event_types lists: \['carrier_pigeon'\]"):
        config_from_dict(raw)


def test_unknown_event_type_in_churn_event_types(raw: dict) -> None:
    raw["churn"]["churn_event_types"] = ["account_closed"]
    with pytest.raises(ConfigError, match=r"churn\.churn_event_types names event types .*\['account_closed'\]"):
        config_from_dict(raw)


def test_unknown_event_type_in_qualifying_event_types(raw: dict) -> None:
    raw["churn"]["qualifying_event_types"] = ["order", "login"]
    with pytest.raises(ConfigError, match=r"churn\.qualifying_event_types names event types .*\['login'\]"):
        config_from_dict(raw)


def test_empty_qualifying_event_types(raw: dict) -> None:
    raw["churn"]["qualifying_event_types"] = []
    with pytest.raises(ConfigError, match=r"churn\.qualifying_event_types is empty; use null"):
        config_from_dict(raw)


def test_churn_applies_from_stage_not_a_stage(raw: dict) -> None:
    raw["churn"]["applies_from_stage"] = "retention"
    with pytest.raises(ConfigError, match=r"churn\.applies_from_stage 'retention' is not a stage; stages are \['awareness', "):
        config_from_dict(raw)


def test_explicit_churn_without_churn_event_types(raw: dict) -> None:
    raw["churn"]["definition"] = "explicit"
    raw["churn"]["churn_event_types"] = []
    with pytest.raises(ConfigError, match=r"churn\.definition is 'explicit' but churn\.churn_event_types is empty"):
        config_from_dict(raw)


def test_unknown_churn_definition(raw: dict) -> None:
    raw["churn"]["definition"] = "vibes"
    with pytest.raises(ConfigError, match=r"churn\.definition: Input should be 'inactivity' or 'explicit'"):
        config_from_dict(raw)


@pytest.mark.parametrize("windows", [[30, 7], [7, 7, 30], [0, 7], [-7, 30]])
def test_windows_must_be_positive_and_ascending(raw: dict, windows: list[int]) -> None:
    raw["features"]["windows_days"] = windows
    with pytest.raises(ConfigError, match=r"features\.windows_days: windows_days must be positive whole days in ascending order"):
        config_from_dict(raw)


def test_empty_windows(raw: dict) -> None:
    raw["features"]["windows_days"] = []
    with pytest.raises(ConfigError, match=r"features\.windows_days: List should have at least 1 item"):
        config_from_dict(raw)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "CEST", "", "../etc/passwd"])
def test_unknown_time_zone(raw: dict, zone: str) -> None:
    raw["source_timezone"] = zone
    with pytest.raises(ConfigError, match=rf"source_timezone: unknown time zone {re.escape(repr(zone))}; use an IANA name"):
        config_from_dict(raw)


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/New_York"])
def test_known_time_zones(raw: dict, zone: str) -> None:
    raw["source_timezone"] = zone
    assert config_from_dict(raw).source_timezone == zone


def test_extra_top_level_key_names_the_key(raw: dict) -> None:
    raw["colour"] = "blue"
    with pytest.raises(ConfigError, match=r"colour: Extra inputs are not permitted"):
        config_from_dict(raw)


def test_extra_nested_key_names_the_field_path(raw: dict) -> None:
    raw["churn"]["horizon_dayz"] = 90  # a typo must not silently keep the default horizon
    with pytest.raises(ConfigError, match=r"churn\.horizon_dayz: Extra inputs are not permitted"):
        config_from_dict(raw)


def test_extra_key_in_a_stage_names_the_index(raw: dict) -> None:
    raw["stages"][2]["events"] = ["pricing_view"]
    with pytest.raises(ConfigError, match=r"stages\.2\.events: Extra inputs are not permitted"):
        config_from_dict(raw)


def test_bad_event_type_name_names_the_field_path(raw: dict) -> None:
    raw["stages"][0]["event_types"].append("Ad Click")
    with pytest.raises(ConfigError, match=r"stages\.0\.event_types\.5: String should match pattern"):
        config_from_dict(raw)


def test_single_stage_is_not_a_funnel(raw: dict) -> None:
    raw["stages"] = raw["stages"][:1]
    raw["churn"]["applies_from_stage"] = "awareness"
    with pytest.raises(ConfigError, match=r"stages: List should have at least 2 items"):
        config_from_dict(raw)


def test_missing_churn_section(raw: dict) -> None:
    del raw["churn"]
    with pytest.raises(ConfigError, match=r"churn: Field required"):
        config_from_dict(raw)


def test_every_field_problem_is_reported_at_once(raw: dict) -> None:
    raw["colour"] = "blue"
    raw["source_timezone"] = "Mars/Olympus"
    raw["conversion"]["horizon_days"] = 0
    msg = _error(raw)
    for piece in ("colour: Extra inputs", "source_timezone: unknown time zone", "conversion.horizon_days: Input should be greater than 0"):
        assert piece in msg, msg


def test_config_from_dict_names_its_origin(raw: dict) -> None:
    raw["colour"] = "blue"
    with pytest.raises(ConfigError, match=r"^shop\.yaml is not a valid funnel config:\n  - colour"):
        config_from_dict(raw, origin="shop.yaml")


# ---- YAML files -------------------------------------------------------------------------------------

def test_yaml_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=rf"config file {re.escape(repr(str(path)))} does not exist"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "kind"), [("- awareness\n- interest\n", "list"), ("just a string\n", "str"), ("", "NoneType"), ("42\n", "int")]
)
def test_yaml_not_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "funnel.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"config file .*funnel\.yaml' must hold a mapping of settings, got {kind}"):
        load_config(path)


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "funnel.yaml"
    path.write_text("stages: [\n  name: awareness\n")
    with pytest.raises(ConfigError, match=r"(?s)config file .*funnel\.yaml' is not valid YAML: .*line 1, column 9"):
        load_config(path)


def test_invalid_config_in_a_yaml_file_names_the_file_and_field(tmp_path: Path, raw: dict) -> None:
    raw["churn"]["horizon_dayz"] = 90
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))} is not a valid funnel config:\n  - churn\.horizon_dayz: Extra inputs"):
        load_config(path)


@pytest.mark.parametrize("kind", ["directory", "binary"])
def test_unreadable_config_file_is_a_config_error(tmp_path: Path, kind: str) -> None:
    if kind == "directory":
        path = tmp_path / "funnel.yaml"
        path.mkdir()
    else:
        path = tmp_path / "funnel.yaml"
        path.write_bytes(b"\xff\xfe\x00name: x\n")
    with pytest.raises(ConfigError, match=r"funnel\.yaml"):
        load_config(path)


# ---- a custom funnel --------------------------------------------------------------------------------

CUSTOM_YAML = """
name: saas-trial
source_timezone: Europe/Berlin
unknown_event_types: map_to_other
unknown_channels: error
stages:
  - name: visitor
    event_types: [page_view, docs_view]
  - name: trial
    event_types: [trial_started, project_created]
  - name: paid
    event_types: [subscribed, seat_added]
other_event_types: [nudge_email, plan_cancelled]
event_groups:
  engagement: [docs_view, project_created]
purchase_event_types: [subscribed, seat_added]
outbound_event_types: [nudge_email]
channels:
  web: inbound
  sdr: outbound
conversion:
  horizon_days: 14
  active_within_days: 60
churn:
  definition: explicit
  horizon_days: 30
  applies_from_stage: paid
  churn_event_types: [plan_cancelled]
features:
  windows_days: [1, 7, 28]
  trend_days: 14
"""


@pytest.fixture()
def custom(tmp_path: Path) -> FunnelConfig:
    path = tmp_path / "saas.yaml"
    path.write_text(CUSTOM_YAML)
    return load_config(path)


def test_custom_three_stage_funnel_validates(custom: FunnelConfig) -> None:
    assert custom.stage_names == ("visitor", "trial", "paid")
    assert custom.conversion_targets() == [("visitor", "trial"), ("trial", "paid")]
    assert custom.event_types == (
        "page_view", "docs_view", "trial_started", "project_created", "subscribed", "seat_added",
        "nudge_email", "plan_cancelled", OTHER,
    )
    assert custom.qualifying_event_types == (
        "page_view", "docs_view", "trial_started", "project_created", "subscribed", "seat_added", OTHER,
    )
    assert custom.churn_stage_index == 2
    assert custom.channel_names == ("web", "sdr")
    assert custom.features.windows_days == [1, 7, 28]


def test_custom_funnel_needs_none_of_the_default_names(custom: FunnelConfig, config: FunnelConfig) -> None:
    default_names = set(config.event_types) | set(config.stage_names) | set(config.channel_names) | set(config.event_groups)
    custom_names = set(custom.event_types) | set(custom.stage_names) | set(custom.channel_names) | set(custom.event_groups)
    assert custom_names & default_names == {OTHER}


def test_custom_funnel_drives_event_validation(custom: FunnelConfig) -> None:
    raw = pd.DataFrame(
        {
            "customer_id": ["u1", "u1", "u1"],
            "timestamp": ["2024-01-15 12:00:00", "2024-01-16T08:00:00Z", "2024-01-17T08:00:00Z"],
            "event_type": ["page_view", "subscribed", "order"],  # 'order' belongs to the default funnel only
            "channel": ["web", "sdr", None],
        }
    )
    out, summary = validate_events(raw, custom, source="saas")
    assert out["event_type"].tolist() == ["page_view", "subscribed", OTHER]
    assert out["timestamp"].iloc[0] == pd.Timestamp("2024-01-15 11:00", tz="UTC")  # Berlin local time
    assert sum(summary.altered.values()) == 1
    raw.loc[2, "channel"] = "ads"  # a default-funnel channel is unknown here, and the policy is error
    with pytest.raises(EventDataError, match=r"saas: column 'channel' has values the funnel config does not know: 'ads' \(1 rows\)"):
        validate_events(raw, custom, source="saas")


def test_custom_funnel_round_trips_through_dict(custom: FunnelConfig) -> None:
    again = config_from_dict(copy.deepcopy(custom.model_dump(mode="json")))
    assert again == custom
    assert again.event_types == custom.event_types


def test_training_lightgbm_may_not_set_what_funnelcast_sets(config):
    from funnelcast.features.funnel import ConfigError, config_from_dict

    raw = config.model_dump(mode="json")
    raw["training"]["lightgbm"] = {"n_jobs": 4, "learning_rate": 0.1}
    with pytest.raises(ConfigError, match=r"training\.lightgbm: .*\['n_jobs'\].*FUNNELCAST_THREADS"):
        config_from_dict(raw)


def test_the_data_hash_sees_the_order_of_event_groups_and_channels(config: FunnelConfig) -> None:
    """Their order is the order of feature columns: two configs that differ only there build other matrices."""
    raw = config.model_dump(mode="json")
    swapped = dict(raw, event_groups=dict(reversed(list(raw["event_groups"].items()))))
    assert list(swapped["event_groups"]) != list(raw["event_groups"])
    assert FunnelConfig.model_validate(swapped).data_hash() != config.data_hash()
    channels = dict(raw, channels=dict(reversed(list(raw["channels"].items()))))
    assert FunnelConfig.model_validate(channels).data_hash() != config.data_hash()
    assert FunnelConfig.model_validate(raw).data_hash() == config.data_hash()


@pytest.mark.parametrize("section", ["conversion", "churn"])
def test_label_days_is_a_window_inside_the_horizon_and_part_of_the_data_hash(raw: dict, config: FunnelConfig,
                                                                              section: str) -> None:
    horizon = raw[section]["horizon_days"]
    raw[section]["label_days"] = horizon + 1
    assert f"label_days ({horizon + 1}) is longer than horizon_days ({horizon})" in _error(raw)
    raw[section]["label_days"] = horizon // 2
    shorter = config_from_dict(raw)
    assert getattr(shorter, section).label_window_days == horizon // 2 and getattr(config, section).label_window_days == horizon
    assert shorter.data_hash() != config.data_hash()  # other labels: a model of one is refused for the other
    raw[section]["label_days"] = None
    # Unset, the option is out of the hash: models trained before it existed still match their config.
    assert config_from_dict(raw).data_hash() == config.data_hash()
