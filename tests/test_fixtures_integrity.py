"""The reference fixtures in ``tests/fixtures`` are unmodified, and the tests need nothing outside the repo.

``tests/fixtures`` holds byte-identical copies of the OpenVLA and pi0 reference fixtures (written by the
original OpenVLA code and by lerobot's pi0 code); the sha256 values below were computed from the originals when they were
copied, so an accidental edit (or a lossy re-save) of any of them fails here.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
FIXTURES = TESTS / "fixtures"

EXPECTED_SHA256 = {
    "openvla-7b-config.json": "4ed784a168a780b7c554cd42bffea01bc663d0c9527520d04c3dd8611c295e69",
    "openvla-7b-keys.txt": "46195aed2b560c26f58691c9082d664efbe53f4de253e2aa351fe898ff2db422",
    "openvla-oft-tiny-a/action_head--5000_checkpoint.safetensors": "5e152d2f61ace259f88c0933950e8d672ccfd34c698bcd022b5250d0b74c0181",
    "openvla-oft-tiny-a/cases.json": "4b362db5870e75aab7f18414bf0ecff32b34ee6e8f52b84114a46217f96cde4c",
    "openvla-oft-tiny-a/config.json": "0910e68bd3f65208ed15f499df76f3443909bfbbc632811acf93d536e09570a0",
    "openvla-oft-tiny-a/dataset_statistics.json": "792d0862ec3e28273d559532e3a09d3b9b9eca568bf0d1b50c983f3d11d6706f",
    "openvla-oft-tiny-a/expected.npz": "67a91a464ab2296b82d230e3ef456683a8bff7c9475eb6859b69449c6d6582b0",
    "openvla-oft-tiny-a/model.safetensors": "6f555945c7a623d12be3e6371530b7381a2ff99a574796ab97aba9c0b066c91f",
    "openvla-oft-tiny-a/proprio_projector--5000_checkpoint.safetensors": "03e70159a5fadd6d7726f3f0bd5d64433852002f366e8e9336ed4c6ab4002c49",
    "openvla-tiny-a/cases.json": "b118a274ee90f1ced5f36ef86e32eb0b3581e15c69bfcf16e10c28e0d422e663",
    "openvla-tiny-a/config.json": "c1a308984dec64606bceb0c82697a7450afb2fee917b9958db46f5f04d4ce07d",
    "openvla-tiny-a/dataset_statistics.json": "683771f560e510f7d765f9e7381652592e944576c2d54702f81119b4cb8e7ae3",
    "openvla-tiny-a/expected.npz": "8bbe22fb3d39d0e06b2dd8dd44cea7a8c5ed21a40fe085a584d65ecf0e3ad232",
    "openvla-tiny-a/generation_config.json": "67fbe17b12e8beb5be98eb911483971cc78589e51a37ac0cce9cd499d06a8bf1",
    "openvla-tiny-a/keys.txt": "12529f7ead78fbfc38e4a0a5ffea7d5f532dfaa83150d117e39d4ec7ae643667",
    "openvla-tiny-a/model.safetensors": "e138579cb30c9a212554c79e78dcdbdfdfa3b9ca6fab7c4f8d093e3063eddc93",
    "openvla-tiny-a/preprocessor_config.json": "0321bd57d60d87ba5bfce4119e7103c21ab5e3ed9db53f9561ce15e784a12cde",
    "pi0-base-keys.txt": "29c6fec5c41f95949b68d8ffdf762e961ce9c370b3eab51e4292a1807fbc55d3",
    "pi0-tiny-a/README.md": "bb1f687cee3f8dfb8972f1f8772fbe9361a84e1ea9232cc33adfb22eb0ed2d28",
    "pi0-tiny-a/cases.json": "17ce4c6c0a1a1ab3da6e091b2a34ccc47d3ff730a977119a49fc5cb2208483c0",
    "pi0-tiny-a/config.json": "397d238556dbbcde7808470337322609d1c743df984cf08adf37635a61b687a4",
    "pi0-tiny-a/expected.npz": "ad87e26d3dfef505441aff1461d3d3985e96d662df76e70a1ec3f0b7e018ab8a",
    "pi0-tiny-a/keys.txt": "22f75be5f891b4f03544f3725a330e942c6a0cd1637339932661d6973b2beab4",
    "pi0-tiny-a/model.safetensors": "ad24a17774dae0b31c412fa6901ec42e1fc23e9b750f51e6c60fc423bea81866",
    "pi0-tiny-a/policy_postprocessor.json": "1c34e47ea2101b993b6c379edb679519fd06ac14a69e8b3f361aec7dcaf2c502",
    "pi0-tiny-a/policy_postprocessor_step_0_unnormalizer_processor.safetensors": "9179aa7bdbaf62664b6fd546e24e9b9a8de0818ac56e9e9abd3b97bef4fcff15",
    "pi0-tiny-a/policy_preprocessor.json": "b1b5bc217a4585c2e70a9284af3369362f994bf247309d826398c56290b4a62f",
    "pi0-tiny-a/policy_preprocessor_step_6_normalizer_processor.safetensors": "9179aa7bdbaf62664b6fd546e24e9b9a8de0818ac56e9e9abd3b97bef4fcff15",
    "pi0-tiny-a/tiny_dims.json": "4e62c939dd7047ce079f1c1a283eb7b0a86d30d2686b83fe8fc9166d3548ba70",
    "pi0-tiny-a/tokenizer/tokenizer.json": "71c873e05ad00b1a287968e14b5c70ebca12c28a65140b432427898ed4d8689b",
    "pi0-tiny-a/tokenizer/tokenizer_config.json": "e4086d4d3977a3bf5d86f743141e2e7b18093dcb70eb391400a460fbd4626c0a",
    "processor/expected_processor.npz": "f0e48ad99599081a4b0e195bc727f6bf13855e32e3bc83e37cbd3d8c7a165575",
    "processor/preprocessor_config.json": "0321bd57d60d87ba5bfce4119e7103c21ab5e3ed9db53f9561ce15e784a12cde",
}

# README.md is the reference fixtures' top-level README (its first README_ORIGINAL_BYTES bytes,
# byte-identical) followed by an appended "## In this repository" section.
README_ORIGINAL_BYTES = 16637
README_ORIGINAL_SHA256 = "83c51bfe42fb4077aaffee431690c826bb866c3aa3957dfa1ed47d465a3ba8b7"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("name", sorted(EXPECTED_SHA256))
def test_fixture_file_is_unmodified(name):
    path = FIXTURES / name
    assert path.is_file(), f"reference fixture missing: {path}"
    assert _sha256(path.read_bytes()) == EXPECTED_SHA256[name], f"reference fixture modified: {path}"


def test_fixture_readme_keeps_the_original_text():
    data = (FIXTURES / "README.md").read_bytes()
    assert _sha256(data[:README_ORIGINAL_BYTES]) == README_ORIGINAL_SHA256
    assert b"## In this repository" in data[README_ORIGINAL_BYTES:]


def test_no_unlisted_fixture_files():
    """Every file in tests/fixtures is a checked copy (a new fixture must get its hash above)."""
    present = {p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*") if p.is_file()}
    assert present == set(EXPECTED_SHA256) | {"README.md"}


# the old location, however spelt: "../shared", "shared/fixtures", or a path join "shared" / "fixtures"
_OUTSIDE = re.compile(r"""\.\./shared|shared/fixtures|["']shared["']\s*/\s*["']fixtures["']""")


def test_tests_do_not_read_outside_the_repository():
    this = Path(__file__).resolve()
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        if path.resolve() == this:
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(TESTS)}:{lineno}: {line.strip()}")
    assert not offenders, "tests must use tests/fixtures (tests.conftest.fixture_path):\n" + "\n".join(offenders)
