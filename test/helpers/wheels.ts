import { execFileSync } from 'node:child_process';

export interface WheelExtras {
  /** Requires-Dist lines, e.g. ['evilpkg>=1']. */
  requires?: string[];
  /** A deflated file of this many zero bytes: a small wheel that unpacks big. */
  bombBytes?: number;
  /** This many empty files: a wheel that costs inodes, not bytes. */
  emptyFiles?: number;
}

/** Builds a pure-Python wheel whose module exposes __version__ (no PyPI here: tests make their own). */
export function makeWheel(dir: string, name: string, version: string, paddingBytes = 0, extras: WheelExtras = {}): void {
  const script = `
import base64, hashlib, json, sys, zipfile
out, name, version, padding, extras = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
module = name.replace("-", "_")
info = f"{module}-{version}.dist-info"
requires = "".join(f"Requires-Dist: {r}\\n" for r in extras.get("requires", []))
files = {
    f"{module}/__init__.py": f"__version__ = {version!r}\\n",
    f"{module}/padding.txt": "x" * padding,
    f"{info}/METADATA": f"Metadata-Version: 2.1\\nName: {name}\\nVersion: {version}\\n{requires}",
    f"{info}/WHEEL": "Wheel-Version: 1.0\\nGenerator: run-python-code-tests\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
}
files.update({f"{module}/empty/{i}": "" for i in range(extras.get("emptyFiles", 0))})
record = []
for path, text in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
    record.append(f"{path},sha256={digest},{len(text.encode())}")
with zipfile.ZipFile(f"{out}/{module}-{version}-py3-none-any.whl", "w", zipfile.ZIP_DEFLATED) as whl:
    for path, text in files.items():
        whl.writestr(path, text)
    if extras.get("bombBytes"):
        zeros = bytes(1 << 20)
        with whl.open(f"{module}/bomb.bin", "w", force_zip64=True) as bomb:
            for _ in range(extras["bombBytes"] >> 20):
                bomb.write(zeros)
        record.append(f"{module}/bomb.bin,,")
    record.append(f"{info}/RECORD,,")
    whl.writestr(f"{info}/RECORD", "\\n".join(record) + "\\n")
`;
  execFileSync('python3', ['-c', script, dir, name, version, String(paddingBytes), JSON.stringify(extras)]);
}

/**
 * Builds a source distribution with an in-tree PEP 517 backend (no setuptools needed) whose build
 * runs `buildCode` (Python, in the build's working directory) before making the wheel. The code
 * may set `built = {...}`: those names become module attributes of the installed package, so a
 * test can read what the build saw.
 */
export function makeSdist(dir: string, name: string, version: string, buildCode = ''): void {
  const script = `
import io, sys, tarfile
out, name, version, build_code = sys.argv[1:5]
module = name.replace("-", "_")
root = f"{name}-{version}"
backend = f'''
import base64, hashlib, os, zipfile
NAME, VERSION, MODULE = {name!r}, {version!r}, {module!r}
INFO = f"{{MODULE}}-{{VERSION}}.dist-info"
METADATA = f"Metadata-Version: 2.1\\\\nName: {{NAME}}\\\\nVersion: {{VERSION}}\\\\n"

def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    os.makedirs(os.path.join(metadata_directory, INFO))
    with open(os.path.join(metadata_directory, INFO, "METADATA"), "w") as f:
        f.write(METADATA)
    return INFO

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    built = {{}}
{"".join("    " + line + chr(10) for line in build_code.splitlines())}
    files = {{
        f"{{MODULE}}/__init__.py": f"__version__ = {{VERSION!r}}\\\\n" + "".join(f"{{k}} = {{v!r}}\\\\n" for k, v in built.items()),
        f"{{INFO}}/METADATA": METADATA,
        f"{{INFO}}/WHEEL": "Wheel-Version: 1.0\\\\nGenerator: run-python-code-tests\\\\nRoot-Is-Purelib: true\\\\nTag: py3-none-any\\\\n",
    }}
    wheel = f"{{MODULE}}-{{VERSION}}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w") as whl:
        for path, text in files.items():
            whl.writestr(path, text)
        whl.writestr(f"{{INFO}}/RECORD", "".join(f"{{p}},,\\\\n" for p in [*files, f"{{INFO}}/RECORD"]))
    return wheel

def build_sdist(sdist_directory, config_settings=None):
    raise NotImplementedError
'''
members = {
    "pyproject.toml": '[build-system]\\nrequires = []\\nbuild-backend = "backend"\\nbackend-path = ["."]\\n',
    "backend.py": backend,
    "PKG-INFO": f"Metadata-Version: 2.1\\nName: {name}\\nVersion: {version}\\n",
}
with tarfile.open(f"{out}/{root}.tar.gz", "w:gz") as sdist:
    for path, text in members.items():
        data = text.encode()
        entry = tarfile.TarInfo(f"{root}/{path}")
        entry.size = len(data)
        sdist.addfile(entry, io.BytesIO(data))
`;
  execFileSync('python3', ['-c', script, dir, name, version, buildCode]);
}
