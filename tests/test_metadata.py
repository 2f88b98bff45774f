import numpy as np
import pytest

from core.data.metadata import UNKNOWN, MetadataEncoder
from core.errors import InputError


def slot(enc: MetadataEncoder, vec: np.ndarray, name: str) -> float:
    return float(vec[enc.feature_names.index(name)])


def test_full_record_is_one_hot_with_scaled_age():
    enc = MetadataEncoder(age_median=45.0)
    vec = enc.encode(60, "female", "back")
    assert vec.shape == (enc.dim,) and vec.dtype == np.float32
    assert slot(enc, vec, "age") == pytest.approx(0.6)
    assert slot(enc, vec, "age_missing") == 0
    assert slot(enc, vec, "sex_female") == 1 and slot(enc, vec, "sex_male") == 0
    assert slot(enc, vec, "site_back") == 1 and slot(enc, vec, "region_torso") == 1
    # exactly one hot per group
    for prefix in ("sex_", "site_", "region_"):
        assert sum(slot(enc, vec, n) for n in enc.feature_names if n.startswith(prefix)) == 1


@pytest.mark.parametrize("missing", [None, float("nan"), "", "unknown", "  Unknown "])
def test_missing_values_map_to_unknown_slots(missing):
    enc = MetadataEncoder(age_median=45.0)
    vec = enc.encode(missing, missing, missing)
    assert slot(enc, vec, "age") == pytest.approx(0.45)  # imputed median
    assert slot(enc, vec, "age_missing") == 1
    assert slot(enc, vec, f"sex_{UNKNOWN}") == 1
    assert slot(enc, vec, f"site_{UNKNOWN}") == 1
    assert slot(enc, vec, f"region_{UNKNOWN}") == 1
    np.testing.assert_array_equal(vec, enc.unknown())


def test_isic_sites_map_onto_the_same_encoder():
    enc = MetadataEncoder()
    vec = enc.encode(None, "male", "torso")
    assert slot(enc, vec, "region_torso") == 1
    assert slot(enc, vec, f"site_{UNKNOWN}") == 1  # the fine site is not known from an ISIC region
    head = enc.encode(None, None, "head/neck")
    assert slot(enc, head, "region_head/neck") == 1
    assert slot(enc, enc.encode(None, None, "scalp"), "region_head/neck") == 1


@pytest.mark.parametrize(
    "age,sex,site,message",
    [(-3, None, None, "between 0 and 120"), (250, None, None, "between 0 and 120"), ("old", None, None, "number"),
     (None, "other", None, "Sex must be"), (None, None, "elbow", "Unknown body site")],
)
def test_bad_values_are_refused_with_a_readable_message(age, sex, site, message):
    with pytest.raises(InputError, match=message):
        MetadataEncoder().encode(age, sex, site)


def test_fit_uses_the_median_of_known_ages():
    assert MetadataEncoder.fit([10, None, 30, float("nan"), 50]).age_median == 30


def test_card_round_trip_and_mismatch():
    enc = MetadataEncoder.fit([20, 40])
    back = MetadataEncoder.from_dict(enc.to_dict())
    np.testing.assert_array_equal(back.encode(33, "male", "face"), enc.encode(33, "male", "face"))
    broken = enc.to_dict() | {"feature_names": ["age"]}
    with pytest.raises(InputError):
        MetadataEncoder.from_dict(broken)
    with pytest.raises(InputError, match="lacks"):
        MetadataEncoder.from_dict({"sites": []})
