"""An aarch64 machine on this x86 one: the phones' builds of the runtimes, under qemu.

What the environment is (``setup`` makes it once and caches it):

* ``qemu-aarch64-static`` (Debian's ``qemu-user-static``) runs one aarch64 program in
  user mode, with the ``-cpu`` model chosen per run: the instruction set, hence the
  kernels onnxruntime, XNNPACK and LiteRT pick, are that CPU's;
* an arm64 Debian root made by ``mmdebstrap --variant=extract``, which unpacks the
  packages without running any foreign binary: the Python interpreter and its C libraries;
* the aarch64 wheels of numpy, onnxruntime, ai-edge-litert and tflite, installed by
  ``pip install --target --platform ... --only-binary=:all:`` at the host's versions, so
  that x86 and aarch64 run the same release of each runtime;
* one ``/proc/cpuinfo`` per CPU model, written from what the emulated CPU reports about
  itself (MIDR_EL1 and the HWCAP bits). qemu 7.2 shows the guest the host's x86 cpuinfo,
  on which the cpuinfo library inside onnxruntime crashes at import, and from which
  XNNPACK would pick its micro-architecture's kernels; the emulated CPU's own file is
  bind-mounted over it in a private mount namespace (``unshare -m``, needs root).
  qemu 8.2 and newer emulate the file themselves and need none of this.

The guest runs this package's own ``runtimes`` code (``emulation/guest.py``): a file is
opened and fed on aarch64 exactly as on x86. Timings there are of an emulator, not of a
phone, and every result that carries one says so.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from ..errors import BadInput, QnasError

DEBIAN_SUITE = "bookworm"              # its python3.11 matches the wheels' cp311 tag
GUEST_PYTHON = "usr/bin/python3.11"
ROOT_PACKAGES = ("python3", "python3-minimal", "libpython3.11-stdlib", "libstdc++6", "libgcc-s1", "zlib1g",
                 "libffi8")
# The runtimes' aarch64 wheels, at the host's versions; tflite reads the files' metadata.
WHEELS = ("numpy", "onnxruntime", "ai-edge-litert", "tflite")
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
APT_HINT = "apt-get install qemu-user-static mmdebstrap"


@dataclass(frozen=True)
class Cpu:
    name: str                     # as the command line names it: ``aarch64:NAME``
    qemu: str                     # qemu's -cpu argument
    features: str                 # what sets its int8 kernels apart, for people


CPUS: dict[str, Cpu] = {c.name: c for c in (
    Cpu("cortex-a53", "cortex-a53", "Armv8.0-A, in-order (the little cores' kernels), no dot product"),
    Cpu("cortex-a72", "cortex-a72", "Armv8.0-A, no dot product: int8 GEMM by widening multiplies"),
    Cpu("cortex-a76", "cortex-a76", "Armv8.2-A with the dot product (SDOT/UDOT)"),
    Cpu("neoverse-n1", "neoverse-n1", "Armv8.2-A with the dot product (SDOT/UDOT)"),
    # qemu 7.2 emulates SME wrongly (XNNPACK's output is garbage with it): off.
    Cpu("max", "max,sme=off", "every feature qemu emulates: dot product, i8mm (SMMLA), SVE2, BF16; SME off"),
)}
DEFAULT_CPU = "neoverse-n1"
MATRIX_CPUS = ("cortex-a72", "neoverse-n1", "max")   # no dot product, dot product, i8mm

# Linux's names of the HWCAP and HWCAP2 bits (arch/arm64/kernel/cpuinfo.c), for the
# Features line of the cpuinfo written for each emulated CPU.
HWCAP_NAMES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma "
               "lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
HWCAP2_NAMES = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm "
                "svebf16 i8mm bf16 dgh rng bti mte ecv afp rpres mte3 sme smei16i64 smef64f64 smei8i32 "
                "smef16f32 smeb16f32 smef32f32 smefa64 wfxt ebf16 sveebf16").split()

# Run inside the emulated CPU: its MIDR_EL1 (an MRS that qemu, like Linux, lets user code
# execute) and the kernel's HWCAP words.
_PROBE = """
import ctypes, mmap, struct, json, sys
libc = ctypes.CDLL(None)
libc.getauxval.restype = ctypes.c_ulong
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(struct.pack("<II", 0xD5380000, 0xD65F03C0))  # mrs x0, midr_el1; ret
midr = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()
print(json.dumps({"midr": midr, "hwcap": libc.getauxval(16), "hwcap2": libc.getauxval(26)}))
"""


def parse_target(text: str) -> Cpu:
    """``aarch64`` or ``aarch64:CPU`` -> the CPU model (``aarch64`` alone: the default)."""
    arch, _, cpu = text.partition(":")
    if arch != "aarch64":
        raise BadInput(f"unknown target machine {text!r} (expected aarch64 or aarch64:CPU, "
                       f"CPU one of {', '.join(CPUS)})")
    cpu = cpu or DEFAULT_CPU
    if cpu not in CPUS:
        raise BadInput(f"unknown aarch64 CPU model {cpu!r} (choose from {', '.join(CPUS)})")
    return CPUS[cpu]


def cache_root() -> Path:
    """``$QNAS_DEPLOY_CACHE``, else ``$XDG_CACHE_HOME/qnas-deploy``, else ``~/.cache/qnas-deploy``."""
    if os.environ.get("QNAS_DEPLOY_CACHE"):
        return Path(os.environ["QNAS_DEPLOY_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qnas-deploy"


def host_versions() -> dict[str, str]:
    """The host's versions of the wheels the guest gets (the same releases on both)."""
    out = {}
    for name in WHEELS:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            raise QnasError(f"{name} is not installed here; the aarch64 environment installs the same "
                            f"version of it (pip install {name})") from None
    return out


def _qemu() -> str:
    for name in ("qemu-aarch64-static", "qemu-aarch64"):
        if shutil.which(name):
            return shutil.which(name)
    raise QnasError(f"qemu-aarch64 is not installed ({APT_HINT})")


def qemu_version(qemu: str) -> tuple[int, int]:
    out = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"version (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


@dataclass(frozen=True)
class Environment:
    """A set-up environment: its folder and what is in it."""
    folder: Path
    qemu: str
    info: dict                    # env.json: versions, qemu, CPU probes

    @property
    def rootfs(self) -> Path:
        return self.folder / "rootfs"

    @property
    def site(self) -> Path:
        return self.folder / "site"

    def label(self, cpu: Cpu) -> str:
        return f"aarch64 {cpu.name} (qemu {self.info['qemu']} user-mode emulation)"

    def argv(self, cpu: Cpu, args: list[str], pythonpath: list[Path]) -> list[str]:
        """The command line running the guest's Python with ``args`` on ``cpu``."""
        env_args = ["-E", "PYTHONPATH=" + ":".join(str(p) for p in [*pythonpath, self.site]),
                    "-E", "PYTHONDONTWRITEBYTECODE=1", "-E", "PYTHONHASHSEED=0"]
        cmd = [self.qemu, "-cpu", cpu.qemu, "-L", str(self.rootfs), *env_args,
               str(self.rootfs / GUEST_PYTHON), *args]
        if not self.info["own_cpuinfo"]:
            return cmd
        cpuinfo = self.folder / "cpuinfo" / f"{cpu.name}.txt"
        return ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /proc/cpuinfo && exec "$@"', str(cpuinfo), *cmd]

    def run(self, cpu: Cpu, args: list[str], pythonpath: list[Path] = (), timeout: float | None = None,
            what: str = "the aarch64 guest") -> str:
        """Run the guest's Python; its stdout, or one error naming what failed."""
        try:
            p = subprocess.run(self.argv(cpu, list(args), list(pythonpath)), capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            raise QnasError(f"{what} on {cpu.name} ran past {timeout:.0f} s") from None
        if p.returncode != 0:
            tail = [l for l in (p.stderr or "").splitlines() if l.strip()][-3:]
            raise QnasError(f"{what} on {cpu.name} failed (exit {p.returncode}): " + " / ".join(tail))
        return p.stdout


def env_folder(versions: dict[str, str] | None = None, root: Path | None = None) -> Path:
    """The cache folder of the environment for these versions (one per set of versions)."""
    versions = versions or host_versions()
    key = hashlib.sha256(json.dumps([DEBIAN_SUITE, versions], sort_keys=True).encode()).hexdigest()[:12]
    return (root or cache_root()) / f"aarch64-{key}"


def load(root: Path | None = None) -> Environment:
    """The environment set up for the host's versions, or one error saying how to set it up."""
    folder = env_folder(root=root)
    info_path = folder / "env.json"
    if not info_path.is_file():
        raise QnasError(f"no aarch64 environment for onnxruntime {host_versions()['onnxruntime']} / ai-edge-litert "
                        f"{host_versions()['ai-edge-litert']} in {folder.parent}: run qnas-deploy target setup aarch64")
    return Environment(folder, _qemu(), json.loads(info_path.read_text()))


def setup(root: Path | None = None, log=print) -> Environment:
    """Make (or find) the environment for the host's versions; idempotent and atomic: a
    half-made one is never left under the final name."""
    versions = host_versions()
    folder = env_folder(versions, root)
    if (folder / "env.json").is_file():
        log(f"aarch64 environment ready: {folder}")
        return load(root)
    qemu = _qemu()
    if not shutil.which("mmdebstrap"):
        raise QnasError(f"mmdebstrap is not installed ({APT_HINT})")
    qv = qemu_version(qemu)
    own_cpuinfo = qv < (8, 2)
    if own_cpuinfo and (os.geteuid() != 0 or not shutil.which("unshare")):
        raise QnasError(f"qemu {qv[0]}.{qv[1]} shows the host's /proc/cpuinfo to the guest; replacing it needs root "
                        f"and unshare (or install qemu 8.2 or newer)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        log(f"arm64 Debian {DEBIAN_SUITE} root (mmdebstrap, no foreign binary runs) ...")
        _check(["mmdebstrap", "--variant=extract", "--architectures=arm64", "--quiet",
                "--include=" + ",".join(ROOT_PACKAGES), DEBIAN_SUITE, str(work / "rootfs")], "mmdebstrap")
        log("aarch64 wheels: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + " ...")
        _check([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
                "--target", str(work / "site"), *[a for p in PLATFORMS for a in ("--platform", p)],
                "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
                *[f"{k}=={v}" for k, v in versions.items()]], "pip install (aarch64 wheels)")
        info = {"versions": versions, "suite": DEBIAN_SUITE, "qemu": f"{qv[0]}.{qv[1]}", "own_cpuinfo": own_cpuinfo,
                "cpus": {}}
        env = Environment(work, qemu, {**info, "own_cpuinfo": False})
        (work / "cpuinfo").mkdir()
        for cpu in CPUS.values():
            probe = json.loads(env.run(cpu, ["-c", _PROBE], what="the CPU probe", timeout=120))
            info["cpus"][cpu.name] = {"midr": f"0x{probe['midr']:08x}", "features": features(probe)}
            (work / "cpuinfo" / f"{cpu.name}.txt").write_text(cpuinfo(probe, os.cpu_count() or 1))
        (work / "env.json").write_text(json.dumps(info, indent=1))
        env = Environment(work, qemu, info)
        log("checking that the runtimes import on every CPU model ...")
        for cpu in CPUS.values():
            env.run(cpu, ["-c", "import onnxruntime, ai_edge_litert.interpreter, numpy, tflite"],
                    what="importing the runtimes", timeout=300)
        os.replace(work, folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log(f"aarch64 environment ready: {folder}")
    return load(root)


def _check(cmd: list[str], what: str) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        tail = [l for l in (p.stderr + p.stdout).splitlines() if l.strip() and not l.startswith("WARNING")][-3:]
        raise QnasError(f"{what} failed (exit {p.returncode}): " + " / ".join(tail))


def features(probe: dict) -> list[str]:
    bits = [n for i, n in enumerate(HWCAP_NAMES) if probe["hwcap"] >> i & 1]
    return bits + [n for i, n in enumerate(HWCAP2_NAMES) if probe["hwcap2"] >> i & 1]


def cpuinfo(probe: dict, processors: int) -> str:
    """A Linux arm64 ``/proc/cpuinfo`` for the probed CPU (the fields the cpuinfo library reads)."""
    midr = probe["midr"]
    block = (f"BogoMIPS\t: 100.00\nFeatures\t: {' '.join(features(probe))}\n"
             f"CPU implementer\t: 0x{midr >> 24 & 0xff:02x}\nCPU architecture: 8\n"
             f"CPU variant\t: 0x{midr >> 20 & 0xf:x}\nCPU part\t: 0x{midr >> 4 & 0xfff:03x}\n"
             f"CPU revision\t: {midr & 0xf}\n\n")
    return "".join(f"processor\t: {i}\n{block}" for i in range(processors))


# The guest side --------------------------------------------------------------------

def _guest_src() -> Path:
    """A folder holding only this package, for the guest's PYTHONPATH (the host's
    site-packages would hand the guest x86 builds)."""
    pkg = Path(__file__).resolve().parent.parent
    src = Path(tempfile.gettempdir()) / f"qnas-guest-{hashlib.sha256(str(pkg).encode()).hexdigest()[:12]}"
    link = src / "qnas_deploy"
    if not link.exists():
        src.mkdir(exist_ok=True)
        tmp = src / f".link-{os.getpid()}"
        tmp.symlink_to(pkg, target_is_directory=True)
        os.replace(tmp, link)
    return src


def _guest(env: Environment, cpu: Cpu, request: dict, timeout: float | None, what: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="qnas-guest-") as tmp:
        req = Path(tmp) / "request.json"
        req.write_text(json.dumps({**request, "folder": tmp}))
        env.run(cpu, ["-m", "qnas_deploy.emulation.guest", str(req)], [_guest_src()], timeout, what)
        out = json.loads((Path(tmp) / "result.json").read_text())
        if "outputs" in out:
            with np.load(Path(tmp) / "outputs.npz") as z:
                out["outputs"] = {k: z[k] for k in z.files}
        return out


def run_images(env: Environment, cpu: Cpu, files: list[tuple[str, str]], images: list[np.ndarray],
               threads: int | None = None, timeout: float | None = None) -> list[list[np.ndarray]]:
    """Every image through every ``(path, runtime name)`` in the guest, in one process:
    ``[file][image] -> uint8 output``, as the runtimes' image runners (grey-aware) give it."""
    with tempfile.TemporaryDirectory(prefix="qnas-in-") as tmp:
        inputs = Path(tmp) / "inputs.npz"
        np.savez(inputs, **{f"i{i}": im for i, im in enumerate(images)})
        out = _guest(env, cpu, {"op": "run", "files": [[str(Path(p).resolve()), r] for p, r in files],
                                "inputs": str(inputs), "threads": threads}, timeout, "running files")
    return [[out["outputs"][f"f{j}_i{i}"] for i in range(len(images))] for j in range(len(files))]


def round_robin(env: Environment, cpu: Cpu, jobs, threads: int | None, runs: int, warmup: int,
                timeout: float | None = None):
    """``runtimes.timing.round_robin`` of ``jobs`` in the guest (emulated timings)."""
    from ..runtimes.timing import Rounds, Timing

    out = _guest(env, cpu, {"op": "time", "jobs": [[str(Path(j.path).resolve()), j.runtime, list(j.shape), j.image]
                                                   for j in jobs],
                            "threads": threads, "runs": runs, "warmup": warmup}, timeout, "timing files")
    return Rounds([Timing(**t) for t in out["timings"]], out["base_rss_kb"], out["peak_rss_kb"])


def machine(env: Environment, cpu: Cpu) -> dict:
    """What ``bench latency`` records of the machine: the emulated CPU, said to be one."""
    return {"system": "Linux", "machine": "aarch64", "cpu": cpu.name, "cpus": os.cpu_count(),
            "emulated": f"qemu {env.info['qemu']} user mode on {platform.machine()}: emulated timings, not a device's",
            "onnxruntime": env.info["versions"]["onnxruntime"], "ai_edge_litert": env.info["versions"]["ai-edge-litert"]}
