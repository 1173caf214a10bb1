"""MIG profiles: only the ones NVIDIA lists for a chip are accepted (issue 24, item 5).

The tables below are copied by hand from the NVIDIA MIG User Guide, "Supported MIG Profiles" (A100 40GB,
A100 80GB, H100 80GB, H100 94GB (NVL), H200 141GB), independently of flopbench's own data file."""

import pytest

from flopbench.api.estimate import named_peak
from flopbench.api.gpus import gpus
from flopbench.cli import main
from flopbench.errors import UsageError
from flopbench.hardware import peaks as hardware

# the fault probe's cases, and a profile of another memory size / another chip
IMPOSSIBLE = [
    "NVIDIA A100-SXM4-40GB MIG 0g.10gb",  # was a ZeroDivisionError in estimate, a peak of 0 in --lookup
    "NVIDIA A100-SXM4-40GB MIG 99g.10gb",  # was rated at 1386 of 108 SMs
    "NVIDIA A100-SXM4-40GB MIG 9c.1g.5gb",  # was rated at 126 of 108 SMs
    "NVIDIA A100-SXM4-40GB MIG 99g",  # no memory size: was taken as the whole chip
    "NVIDIA A100-SXM4-40GB MIG 9c.1g",
    "NVIDIA A100-SXM4-40GB MIG 3g.40gb",  # an A100 80GB profile on the 40GB chip
    "NVIDIA A100-SXM4-40GB MIG 4c.3g.20gb",  # 4 compute slices of a 3-slice instance
    "NVIDIA A100-SXM4-40GB MIG 3c.4g.20gb",  # a 4g instance splits into 1c, 2c or 4c only
    "NVIDIA H100 80GB HBM3 MIG 1g.5gb",  # an A100 40GB profile on an H100
    "NVIDIA L40S MIG 1g.5gb",  # no MIG on an L40S
]


@pytest.mark.parametrize("name", IMPOSSIBLE)
def test_gpus_lookup_refuses_an_impossible_mig_profile(name, capsys):
    with pytest.raises(UsageError) as info:
        gpus(lookup=name)
    message = str(info.value)
    assert "\n" not in message and "MIG" in message and name.split(" MIG ")[1] in message
    assert main(["gpus", "--lookup", name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("name", IMPOSSIBLE)
def test_estimate_refuses_an_impossible_mig_profile(name, capsys):
    with pytest.raises(UsageError):
        named_peak(name, "bf16", None)
    assert main(["estimate", "--model", "gpt2", "--tokens", "1e9", "--gpu", name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


# (chip name as NVML gives it, the MIG User Guide's GPU-instance profiles for it)
PROFILES = [
    ("NVIDIA A100-SXM4-40GB", ["1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"]),
    ("NVIDIA A100-PCIE-40GB", ["1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"]),
    ("NVIDIA A100-SXM4-80GB", ["1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]),
    ("NVIDIA A100 80GB PCIe", ["1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]),
    ("NVIDIA H100 80GB HBM3", ["1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]),
    ("NVIDIA H100 PCIe", ["1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]),
    ("NVIDIA H100 NVL", ["1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb"]),
    ("NVIDIA H200", ["1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"]),
]


@pytest.mark.parametrize("chip, profiles", PROFILES)
def test_every_listed_profile_is_accepted(chip, profiles):
    for profile in profiles:
        doc = gpus(lookup=f"{chip} MIG {profile}")
        assert doc["mig"]["chip_sms"] in (108, 114, 132)
    # compute instances: c of the instance's g slices (MIG User Guide, "Compute Instance profiles")
    g7 = next(p for p in profiles if p.startswith("7g."))
    for c in (1, 2, 3, 4, 7):
        gpus(lookup=f"{chip} MIG {c}c.{g7}")
    for c in (5, 6, 8):
        with pytest.raises(UsageError):
            gpus(lookup=f"{chip} MIG {c}c.{g7}")


def test_a100_slice_sms_follow_the_profile():
    # 14 SMs per compute slice on an A100: 1c.7g = 14, 4c.7g = 56, 3g = 42, 7g = 98 of 108
    for profile, sms in [("1c.7g.40gb", 14), ("4c.7g.40gb", 56), ("3g.20gb", 42), ("7g.40gb", 98)]:
        assert gpus(lookup=f"NVIDIA A100-SXM4-40GB MIG {profile}")["mig"]["slice_sms"] == sms


def test_a_detected_name_with_an_unknown_profile_gets_no_peak_and_no_error():
    """A run on a device names no profile by hand: a profile not in the tables (a newer driver's) gives no peak
    and the reason, not an error; the SM count the device reports still rates it."""
    value, source = hardware.resolve_peak("NVIDIA A100-SXM4-40GB MIG 0g.10gb", "bf16", None)
    assert value is None and "0g.10gb" in source and "--peak-tflops" in source
    value, _ = hardware.resolve_peak("NVIDIA A100-SXM4-40GB MIG 0g.10gb", "bf16", None, sm_count=14)
    assert value == pytest.approx(312 * 14 / 108)
