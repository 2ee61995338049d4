import { execFileSync } from 'node:child_process';

/** Builds a pure-Python wheel whose module exposes __version__ (no PyPI here: tests make their own). */
export function makeWheel(dir: string, name: string, version: string, paddingBytes = 0): void {
  const script = `
import base64, hashlib, sys, zipfile
out, name, version, padding = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
module = name.replace("-", "_")
info = f"{module}-{version}.dist-info"
files = {
    f"{module}/__init__.py": f"__version__ = {version!r}\\n",
    f"{module}/padding.txt": "x" * padding,
    f"{info}/METADATA": f"Metadata-Version: 2.1\\nName: {name}\\nVersion: {version}\\n",
    f"{info}/WHEEL": "Wheel-Version: 1.0\\nGenerator: run-python-code-tests\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
}
record = []
for path, text in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
    record.append(f"{path},sha256={digest},{len(text.encode())}")
record.append(f"{info}/RECORD,,")
files[f"{info}/RECORD"] = "\\n".join(record) + "\\n"
with zipfile.ZipFile(f"{out}/{module}-{version}-py3-none-any.whl", "w") as whl:
    for path, text in files.items():
        whl.writestr(path, text)
`;
  execFileSync('python3', ['-c', script, dir, name, version, String(paddingBytes)]);
}
