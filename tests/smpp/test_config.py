from pathlib import Path

import pytest
import yaml

from carrierpay.adapters.smpp import SmppConfigError, SmppConnector, load_smpp_config, resolve_secret

from .conftest import smpp_section

ROOT = Path(__file__).resolve().parents[2]


def test_section_loads_with_defaults():
    cfg = load_smpp_config(smpp_section(2775, window=None) | {"window": 10}, throughput_tps=20)
    assert cfg.window == 10 and cfg.tps == 20 and cfg.short_code == "33001"
    assert cfg.price_point(500, "ZAR").short_code == "33005"
    assert cfg.price_point(700) is None


@pytest.mark.parametrize(
    "change,path",
    [
        ({"window": 0}, "smpp.window"),
        ({"system_id": "x" * 16}, "smpp.system_id"),
        ({"system_type": "y" * 13}, "smpp.system_type"),
        ({"port": "2775"}, "smpp.port"),
        ({"source_short_codes": ["33 001"]}, "smpp.source_short_codes[0]"),
        ({"premium": {"pricing": "tlv", "price_points": [{"amount_minor": 5}]}}, "smpp.premium.price_points[0]"),
        ({"dlr": {"error_map": {"069": "broke"}}}, "smpp.dlr.error_map.069"),
        ({"surprise": 1}, "smpp"),
    ],
)
def test_errors_name_the_field(change, path):
    with pytest.raises(SmppConfigError) as exc:
        load_smpp_config(smpp_section(2775) | change)
    assert f"{path}:" in str(exc.value)


def test_password_length_checked_before_connecting():
    with pytest.raises(SmppConfigError, match=r"smpp.password: 9 characters.*at most 8"):
        SmppConnector(smpp_section(2775), {"SMSC_TEST_PASSWORD": "123456789"})


def test_secret_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("SMSC_X", raising=False)
    monkeypatch.delenv("CARRIERPAY_SECRETS_FILE", raising=False)
    with pytest.raises(SmppConfigError, match="SMSC_X"):
        resolve_secret("SMSC_X")
    f = tmp_path / "secrets.yaml"
    f.write_text("SMSC_X: fromfile\n")
    monkeypatch.setenv("CARRIERPAY_SECRETS_FILE", str(f))
    assert resolve_secret("SMSC_X") == "fromfile"
    monkeypatch.setenv("SMSC_X", "fromenv")
    assert resolve_secret("SMSC_X") == "fromenv"
    assert resolve_secret("SMSC_X", {"SMSC_X": "given"}) == "given"


def test_carrier_spec_smpp_section_is_valid():
    spec = yaml.safe_load((ROOT / "carriers" / "smsc_za" / "carrier.yaml").read_text())
    assert spec["transport"] == "smpp"
    cfg = load_smpp_config(spec["smpp"], throughput_tps=spec["throughput"]["tps"])
    assert cfg.tps == 20 and cfg.pricing and cfg.price_points
    assert {"code", "name", "country", "mcc", "mnc", "currency", "timezone", "number_ranges", "throughput",
            "regulation", "terms", "operations"} <= spec.keys()
    assert spec["operations"]["charge"]["safe_to_repeat"] is False


def test_docs_example_is_valid():
    text = (ROOT / "docs" / "smpp.md").read_text()
    block = text.split("```yaml", 1)[1].split("```", 1)[0]
    spec = yaml.safe_load(block)
    load_smpp_config(spec["smpp"])
