"""run-python-code sandbox runner: PID 1 of every sandbox container.

Protocol (its version is the image's RUNNER_PROTOCOL, declared in sandbox-image/Dockerfile)
  in  (stdin):  one tar archive: `job.json` first, then the workspace under `workspace/` (and,
                for an install, the operator's wheelhouse under `wheelhouse/`).
  out (stdout): frames of [kind: 1 byte][length: 4 bytes big-endian][payload], payload <= 64 KiB:
                b'o' user stdout, b'e' user stderr, b'f' a chunk of the tar of changed workspace
                files, b'r' the final JSON report, then b'z' (empty): done, nothing follows.
                A container asked to preload (RUNNER_PRELOAD) first has the user's process import
                those modules and then sends b'w' (empty): ready, send the job.
  A context's container gets its jobs framed instead ([length: 4 bytes][payload <= 64 KiB], an
                empty frame ends one job's tar), one after another on the same stdin: the first, of
                mode `context`, starts its kernel (one interpreter kept for every call); each next
                one is a call, answered as above; a report with `lost` says the kernel is gone and
                the container ends. A stdin that starts with a zero byte is framed (a tar starts
                with job.json's name).
The user's code runs in a forked child whose stdout/stderr are pipes to this process, so nothing
it prints can be mistaken for a frame. This process stays PID 1 (the kernel ignores SIGKILL sent
to a namespace's init from inside it) and is made non-dumpable, so user code (same uid) cannot
open its file descriptors through /proc. Stdlib only at import: the image may have nothing else
(numpy, pandas and matplotlib are only ever preloaded, and only when they are there).
"""

import base64
import binascii
import errno
import fcntl
import io
import json
import os
import select
import signal
import stat
import struct
import sys
import tarfile
import time

# Taken out of the environment so that the user's code never sees it.
PROTOCOL = int(os.environ.pop("RUNNER_PROTOCOL", "0"))
PRELOAD = [name for name in os.environ.pop("RUNNER_PRELOAD", "").split(",") if name]
WORKSPACE = "/workspace"
WHEELHOUSE = "/wheelhouse"
PACKAGES = "/opt/packages"  # the tenant's packages volume: read-only for code, writable for installs
VENV = PACKAGES + "/venv"
# An execution's declared dependencies (PEP 723, or the request's): their own volume, read-only,
# its venv made when it was installed (then mounted at /opt/packages), seen ahead of the tenant's.
DEPENDENCIES = "/opt/deps"
SCRATCH = "/scratch"  # install containers: a size- and inode-capped tmpfs, memory on top of the cap, never disk
RUNNER_FILE = os.path.abspath(__file__)
MAX_FRAME = 64 * 1024
PIPE_MAX = 1 << 20  # the most a pipe can hold (Linux's pipe-max-size)
DIRECTORY = ("dir",)  # a directory's entry in the manifest of what the job brought in
MPL_CACHE_SRC = "/opt/run-python-code/mpl-cache"
# Names the server keeps, in bytes of UTF-8 (server/relative-path.ts declares the same two numbers).
MAX_PATH_BYTES = 1024
MAX_SEGMENT_BYTES = 255
# matplotlib's backend for the user's code (provided by RunnerModules): Agg, with figures as outputs.
INLINE_BACKEND = "run_python_code_inline"
# The forms an output may take, richest first (an object's text/plain comes last); images are base64.
MIMES = ("image/png", "image/svg+xml", "text/html", "text/markdown", "application/json", "text/plain")
IMAGE_MIMES = ("image/png", "image/svg+xml")
REPR_METHODS = (("image/png", "_repr_png_"), ("image/svg+xml", "_repr_svg_"), ("text/html", "_repr_html_"),
                ("text/markdown", "_repr_markdown_"), ("application/json", "_repr_json_"))
SOURCES = ("figure", "display", "value")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
OUTPUTS = None  # the job's Outputs, in the user's process (figures reach it through the backend)
# The user's process's own descriptors (spawn()): its report, its job (or a context's calls), its "ready".
REPORT_FD = 3
JOB_FD = 4
READY_FD = 5
STAGED_OUT, STAGED_ERR = 6, 7  # its stdout and stderr, until its preload is done
FIRST_FREE_FD = 8
USER_PROCESS = "--user-process"  # runner.py's argument that makes it the user's process


def frames(kind, payload):
    view = memoryview(payload)
    return b"".join(kind + struct.pack(">I", len(view[at:at + MAX_FRAME])) + view[at:at + MAX_FRAME]
                    for at in range(0, max(len(view), 1), MAX_FRAME))


class Channel:
    """The framed protocol stream to the server (our own dup of fd 1)."""

    def __init__(self, fd):
        self.fd = fd
        self.held = b""  # frames that wait for the next write: under gVisor each write costs tens of microseconds
        self.streaming = True  # the job's `stream`: False, its output waits too (nobody reads it as it comes)

    def send(self, kind, payload):
        self._write_all(frames(kind, payload))

    def output(self, kind, payload):
        if self.streaming:
            self.send(kind, payload)
        else:
            self.hold(kind, payload)

    def hold(self, kind, payload):
        """Frames that may go with the next ones (a small changed-files tar goes with the report)."""
        self.held += frames(kind, payload)
        if len(self.held) >= MAX_FRAME:
            self.flush()

    def would_send(self, size):
        """Whether holding `size` more bytes would send what is held."""
        return len(self.held) + size + 5 * (size // MAX_FRAME + 1) >= MAX_FRAME

    def flush(self):
        self._write_all(b"")

    def finish(self, report):
        """The report, then done, in one write. The server answers now, without waiting for this
        container to exit."""
        self._write_all(frames(b"r", json.dumps(report).encode("utf-8")) + frames(b"z", b""))

    def _write_all(self, data):
        data, self.held = self.held + data, b""  # what waits goes first
        while data:
            data = data[os.write(self.fd, data):]


class Prepended:
    """A stream whose first bytes were already read (to tell a one-shot job from a context's)."""

    def __init__(self, head, stream):
        self.head = head
        self.stream = stream

    def read(self, size=-1):
        if self.head:
            data, self.head = (self.head, b"") if size is None or size < 0 or size >= len(self.head) else (self.head[:size], self.head[size:])
            return data
        return self.stream.read(size)


class FileFrames:
    """A write-only file object that turns a tar stream into b'f' frames. `before_send`, if given,
    is called once, before the first of them would leave the container; should it raise, nothing
    more of the stream is taken."""

    def __init__(self, channel, before_send=None):
        self.channel = channel
        self.before_send = before_send
        self.refused = False

    def write(self, data):
        if self.refused:
            return len(data)
        if self.before_send is not None and self.channel.would_send(len(data)):
            try:
                check, self.before_send = self.before_send, None
                check()
            except BaseException:
                self.refused = True  # the tar's close writes its last block: it stays here too
                raise
        self.channel.hold(b"f", data)
        return len(data)


class Exactly:
    """A file read as exactly `size` bytes, the size its tar header says: cut, or padded with zero
    bytes (`short`) should it have shrunk meanwhile, so that the tar stays whole."""

    def __init__(self, f, size):
        self.f, self.left, self.short = f, size, False

    def read(self, size):
        size = min(size, self.left)
        data = self.f.read(size)
        if len(data) < size:
            self.short = True
            data += b"\0" * (size - len(data))
        self.left -= size
        return data


class Moved(BaseException):
    """The user's process, left stopped while the workspace was read, ran again meanwhile (a
    BaseException: raised from a signal handler anywhere in the walk, no `except Exception` on the
    way may swallow it)."""


def make_undumpable():
    """Fails closed: without it, user code (same uid) could reach our fds through /proc/1/fd."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, 0, 0, 0, 0) != 0 or libc.prctl(3, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE 0, PR_GET_DUMPABLE
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def set_dumpable():
    """A process forked from the runner (undumpable) may read its own /proc/self again."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(4, 1, 0, 0, 0)
    except Exception:
        pass


def clean_name(rel):
    """Whether the server's tar filter keeps this workspace-relative name: UTF-8, parts of at most
    MAX_SEGMENT_BYTES, MAX_PATH_BYTES in all, no empty, "." or ".." part, no backslash or NUL."""
    try:
        size = len(rel.encode("utf-8"))  # a name that is not UTF-8 (surrogate-escaped bytes) fails here
    except UnicodeEncodeError:
        return False
    parts = rel.split("/")
    return (0 < size <= MAX_PATH_BYTES and "\\" not in rel and "\0" not in rel
            and all(p not in ("", ".", "..") and len(p.encode("utf-8")) <= MAX_SEGMENT_BYTES for p in parts))


def safe_target(name):
    """(root, relative path) of a tar entry under workspace/ or wheelhouse/, or None if unclean."""
    prefix, _, rel = name.partition("/")
    root = {"workspace": WORKSPACE, "wheelhouse": WHEELHOUSE}.get(prefix)
    rel = rel.rstrip("/")
    if root is None or not clean_name(rel):
        return None
    return root, rel


def receive_job(stream):
    """Reads the job tar from stdin into /workspace; returns (job, manifest of what was written)."""
    job = None
    manifest = {}
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            if member.name == "job.json" and member.isfile() and job is None:
                job = json.loads(archive.extractfile(member).read().decode("utf-8"))
                continue
            target = safe_target(member.name)
            if target is None:
                continue
            root, rel = target
            path = os.path.join(root, rel)
            if member.isdir():
                os.makedirs(path, mode=0o755, exist_ok=True)
                if root == WORKSPACE:
                    manifest[rel] = DIRECTORY
            elif member.isfile():
                os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                source = archive.extractfile(member)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
                with os.fdopen(fd, "wb") as target:
                    while True:
                        block = source.read(1 << 20)
                        if not block:
                            break
                        target.write(block)
                os.utime(path, (member.mtime, member.mtime))
                if root == WORKSPACE:
                    st = os.lstat(path)
                    manifest[rel] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return job, manifest


def mirror_workspace(manifest, workspace=WORKSPACE):
    """A context's /workspace after a call's job came in: exactly the tenant's workspace as sent, so
    that what was deleted on the server since (or never kept: a link, say) is gone here too."""
    import shutil

    kept = set()
    for rel in manifest:
        parts = rel.split("/")
        kept.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    restore_access(workspace)
    for root, dirs, files in os.walk(workspace):
        for name in list(dirs) + files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, workspace)
            if rel in kept:
                continue
            if name in dirs and not os.path.islink(path):
                dirs.remove(name)
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def prepare_matplotlib():
    """matplotlib wants a writable config dir; seed it with the font cache built into the image."""
    target = os.environ.get("MPLCONFIGDIR")
    if not target or not os.path.isdir(MPL_CACHE_SRC):
        return
    try:
        os.makedirs(target, exist_ok=True)
        for name in os.listdir(MPL_CACHE_SRC):
            with open(os.path.join(MPL_CACHE_SRC, name), "rb") as src, open(os.path.join(target, name), "wb") as dst:
                dst.write(src.read())
    except OSError:
        pass


def venv_site_dirs(venv=None):
    import glob

    return sorted(glob.glob((venv or VENV) + "/lib/python3*/site-packages"))


def use_tenant_packages():
    """Puts the tenant's installed packages ahead of the image's own, as an activated venv would,
    and an execution's declared dependencies ahead of both."""
    import site

    for venv in (VENV, DEPENDENCIES + "/venv"):
        for sitedir in venv_site_dirs(venv):
            before = list(sys.path)
            site.addsitedir(sitedir)
            sys.path[:] = [p for p in sys.path if p not in before] + before
            os.environ["PATH"] = venv + "/bin:" + os.environ.get("PATH", "/usr/bin:/bin")


def installed_packages():
    """{normalized name: version} of the distributions in the tenant's venv."""
    import importlib.metadata
    import re

    found = {}
    for dist in importlib.metadata.distributions(path=venv_site_dirs()):
        name = dist.metadata["Name"]
        if name:
            found[re.sub(r"[-_.]+", "-", name).lower()] = dist.version
    return found


def usage(root):
    """(bytes allocated on disk, files and directories) under root, as `du` counts them; links not followed."""
    total = count = 0
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(base, name))
            except OSError:
                continue
            total += st.st_blocks * 512
            count += 1
    return total, count


# pip as the image ships it, run so that nothing of the tenant's packages executes: -S skips site
# (no .pth file runs) and imports never resolve into the venv, which pip still sees as installed.
PIP_BOOTSTRAP = """
import sys, importlib.machinery as machinery
venv, venv_site, system_sites = sys.argv[1], sys.argv[2], sys.argv[3].split(":")
del sys.argv[1:4]
sys.prefix = sys.exec_prefix = venv
sys.path += [venv_site] + system_sites
class SystemOnly(machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return super().find_spec(name, [p for p in sys.path if p != venv_site] if path is None else path, target)
sys.meta_path[:] = [SystemOnly if f is machinery.PathFinder else f for f in sys.meta_path]
import runpy
runpy.run_module("pip", run_name="__main__", alter_sys=True)
"""


def pip_command(python, command, *args):
    """argv of one pip run against the tenant's venv (which need not exist for a dry run)."""
    import site

    venv_site = VENV + "/lib/python%d.%d/site-packages" % sys.version_info[:2]
    return [python, "-I", "-S", "-c", PIP_BOOTSTRAP, VENV, venv_site, ":".join(site.getsitepackages()), command,
            "--no-input", "--disable-pip-version-check", "--no-cache-dir", "--progress-bar", "off", *args]


def over_cap(job, used, adding=None):
    """The message when the tenant's packages (with `adding`, what an install unpacked) pass a cap, or None."""
    total = used if adding is None else (used[0] + adding[0], used[1] + adding[1])
    verb, tail = ("already use", "") if adding is None else ("would come to", "; nothing was installed")
    if total[0] > job["packages_max_bytes"]:
        return "This tenant's packages %s %d MiB, over the cap of %d MiB (PACKAGES_MAX_MB)%s" % (
            verb, total[0] >> 20, job["packages_max_bytes"] >> 20, tail)
    if total[1] > job["packages_max_files"]:
        return "This tenant's packages %s %d files and directories, over the cap of %d (PACKAGES_MAX_FILES)%s" % (
            verb, total[1], job["packages_max_files"], tail)
    return None


def scratch_ran_out(job, used):
    """When a step failed: the message if /scratch (capped at the room left) ran out of bytes or inodes."""
    st = os.statvfs(SCRATCH)
    if st.f_favail < 16:
        return ("The install needs more than the %d files and directories this tenant has left under "
                "PACKAGES_MAX_FILES (%d); nothing was installed"
                % (max(0, job["packages_max_files"] - used[1]), job["packages_max_files"]))
    if st.f_bavail * st.f_frsize < (1 << 20):
        return ("The install needs more than the %d MiB this tenant has left under PACKAGES_MAX_MB (%d MiB); "
                "nothing was installed" % (max(0, job["packages_max_bytes"] - used[0]) >> 20, job["packages_max_bytes"] >> 20))
    return None


def refused(error):
    return {"exit_code": 1, "child": {"status": "exception", "error": error}}


def user_place(filename, lineno):
    """' (line 3)' for the submitted code, ' (lib/x.py, line 3)' for a workspace file, else ''."""
    if not isinstance(lineno, int) or lineno < 1:
        return ""
    if filename == "<code>":
        return " (line %d)" % lineno
    if isinstance(filename, str) and filename.startswith(WORKSPACE + "/"):
        return " (%s, line %d)" % (filename[len(WORKSPACE) + 1:], lineno)
    return ""


def user_traceback(exc):
    """Formats an exception without the runner's own frames; the summary names the user's line."""
    import traceback

    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == RUNNER_FILE:
        tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    only = traceback.TracebackException(type(exc), exc, None)
    only.__notes__ = None  # notes (add_note) follow the message: the summary is the message's line
    summary = list(only.format_exception_only())[-1].strip()
    # A client that reads only `error` still learns where: a SyntaxError's own line when it is in
    # the user's code, else the innermost frame of the user's code (not of a library it called).
    place = ""
    if isinstance(exc, SyntaxError):
        place = user_place(exc.filename, exc.lineno)
    if not place:
        for frame, lineno in traceback.walk_tb(tb):  # outermost first: the innermost one wins
            place = user_place(frame.f_code.co_filename, lineno) or place
    return summary + place, "".join(lines)


def split_last_expression(source, filename):
    """The code as a notebook cell runs: everything but a last expression ('exec'), then that
    expression ('eval', or None), compiled apart from one parse so that each runs once and
    tracebacks keep the user's own line numbers."""
    import ast

    tree = compile(source, filename, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = compile(ast.Expression(tree.body.pop().value), filename, "eval", dont_inherit=True)
    return compile(tree, filename, "exec", dont_inherit=True), last


def real_method(obj, name):
    """obj's `name` method when it really has one: not a class's unbound one, and not an object that
    answers every attribute (as IPython checks, with an attribute nobody defines)."""
    if isinstance(obj, type):
        return None
    try:
        if hasattr(obj, "_run_python_code_canary_that_does_not_exist_"):
            return None
        method = getattr(obj, name, None)
    except Exception:
        return None
    return method if callable(method) else None


def encode_form(mime, value):
    """One form of an object as an output's data (base64 for images, text otherwise), or None."""
    if isinstance(value, tuple) and len(value) == 2:
        value = value[0]  # (data, metadata), as IPython allows
    if mime == "application/json":
        if isinstance(value, str):
            try:
                json.loads(value)
            except ValueError:
                return None
            return value
        try:
            return json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            return None
    if mime in IMAGE_MIMES:
        if isinstance(value, str) and mime == "image/svg+xml":
            value = value.encode("utf-8", "backslashreplace")
        if isinstance(value, str):  # already base64, as IPython takes a str _repr_png_
            try:
                value = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                return None
        if not isinstance(value, (bytes, bytearray)) or (mime == "image/png" and not value.startswith(PNG_MAGIC)):
            return None
        return base64.b64encode(value).decode("ascii")
    return value if isinstance(value, str) else None


def mime_bundle(obj, plain=None):
    """An object's forms as IPython shows them: its _repr_mimebundle_ and _repr_*_ methods, then
    text/plain (its repr(), or `plain`), as [(mime, data)], richest first. A form that fails is left out."""
    forms = {} if plain is None else {"text/plain": plain}
    method = real_method(obj, "_repr_mimebundle_")
    if method:
        try:
            bundle = method(include=None, exclude=None)
        except Exception:
            bundle = None
        if isinstance(bundle, tuple) and len(bundle) == 2:
            bundle = bundle[0]
        if isinstance(bundle, dict):
            for mime in MIMES:
                if mime in bundle:
                    data = encode_form(mime, bundle[mime])
                    if data is not None:
                        forms[mime] = data
    for mime, name in REPR_METHODS:
        method = None if mime in forms else real_method(obj, name)
        if method:
            try:
                data = encode_form(mime, method())
            except Exception:
                data = None
            if data is not None:
                forms[mime] = data
    if "text/plain" not in forms:
        try:
            forms["text/plain"] = repr(obj)
        except Exception:
            pass
    return [(mime, forms[mime]) for mime in MIMES if mime in forms]


def is_figure(obj):
    figure = sys.modules.get("matplotlib.figure")
    return figure is not None and isinstance(obj, figure.Figure)


class Outputs:
    """What the code shows, in the order it shows it, within the job's caps: figures, display()
    calls, the last expression's rich forms. Past a cap nothing more is kept and `truncated` says so."""

    def __init__(self, max_count, max_bytes):
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.items = []
        self.bytes = 0
        self.truncated = False
        self.shown = {}  # id -> figure already an output (kept, so that its id is not reused)

    def full(self):
        if self.truncated or len(self.items) >= self.max_count:
            self.truncated = True
            return True
        return False

    def add(self, mime, data, source):
        size = len(data.encode("utf-8", "backslashreplace"))
        if self.full() or self.bytes + size > self.max_bytes:
            self.truncated = True
            return
        self.items.append({"mime": mime, "data": data, "source": source})
        self.bytes += size

    def figure(self, fig, source):
        """A matplotlib figure as one PNG, at its own size and dpi; an empty one shows nothing."""
        if not fig.axes and not fig.lines:
            return
        if self.full():
            return
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=fig.dpi)
        self.shown[id(fig)] = fig
        self.add("image/png", base64.b64encode(buf.getvalue()).decode("ascii"), source)

    def show(self, obj, source, rich_only=False, plain=None):
        """Every form of one object; with `rich_only`, nothing for an object that has only text/plain.
        `plain`: its repr(), when that is already known."""
        if is_figure(obj):
            self.figure(obj, source)
            return
        if self.full():
            return
        forms = mime_bundle(obj, plain)
        if rich_only and all(mime == "text/plain" for mime, _ in forms):
            return
        for mime, data in forms:
            self.add(mime, data, source)

    def display(self, *objs, raw=False, **_options):
        """IPython's display(): each object's forms become outputs, now. `raw`: objects are
        {mime: data} bundles already. Options IPython has for live documents are ignored."""
        for obj in objs:
            if raw and isinstance(obj, dict):
                for mime in MIMES:
                    data = encode_form(mime, obj[mime]) if mime in obj else None
                    if data is not None:
                        self.add(mime, data, "display")
            else:
                self.show(obj, "display")

    def open_figures(self):
        """Every figure still open (pyplot's), unless it is already an output and unchanged since."""
        helpers = sys.modules.get("matplotlib._pylab_helpers")
        if helpers is None:
            return
        for manager in helpers.Gcf.get_all_fig_managers():
            fig = manager.canvas.figure
            if self.shown.get(id(fig)) is fig and not fig.stale:
                continue
            self.figure(fig, "figure")

    def report(self):
        return {"outputs": self.items, "outputs_truncated": self.truncated}


def clean_outputs(outputs, truncated, max_count, max_bytes):
    """The user's process's outputs (hostile: it can write anything on its report pipe) as the
    server takes them: known mimes and sources, text data, base64 images (a PNG is a PNG), in order
    within the caps. Returns (outputs, truncated)."""
    kept = []
    total = 0
    truncated = truncated is True
    for item in outputs if isinstance(outputs, list) else []:
        if not isinstance(item, dict):
            continue
        mime, data, source = item.get("mime"), item.get("data"), item.get("source")
        if mime not in MIMES or source not in SOURCES or not isinstance(data, str):
            continue
        if mime in IMAGE_MIMES:
            try:
                raw = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                continue
            if mime == "image/png" and not raw.startswith(PNG_MAGIC):
                continue
        size = len(data.encode("utf-8", "backslashreplace"))
        if len(kept) >= max_count or total + size > max_bytes:
            truncated = True
            break
        kept.append({"mime": mime, "data": data, "source": source})
        total += size
    return kept, truncated


def inline_backend(module):
    """Fills matplotlib's backend for the user's code: Agg drawing, where pyplot.show() makes every
    open figure an output and closes it (as Jupyter's inline backend does) and Figure.show() shows one."""
    from matplotlib.backend_bases import FigureManagerBase
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    class Manager(FigureManagerBase):
        def show(self):
            if OUTPUTS is not None:
                OUTPUTS.figure(self.canvas.figure, "figure")

    class Canvas(FigureCanvasAgg):
        manager_class = Manager

    def show(*args, **kwargs):
        from matplotlib import pyplot
        from matplotlib._pylab_helpers import Gcf

        if OUTPUTS is not None:
            for manager in Gcf.get_all_fig_managers():
                OUTPUTS.figure(manager.canvas.figure, "figure")
        pyplot.close("all")

    module.FigureCanvas = Canvas
    module.FigureManager = Manager
    module.show = show


def display(*objs, **options):
    """IPython's display() for the user's code (a builtin, as in IPython, and in IPython.display)."""
    if OUTPUTS is not None:
        OUTPUTS.display(*objs, **options)


def ipython_display(module):
    """What code written for IPython imports from IPython.display, when IPython is not installed:
    display() and the wrappers that give data a form (HTML("<b>x</b>"), Image(filename="a.png"), ...)."""

    def wrapper(name, method, binary=False):
        def __init__(self, data=None, url=None, filename=None, **_options):
            if filename is not None:
                with open(filename, "rb" if binary else "r") as f:
                    data = f.read()
            self.data = data

        return type(name, (), {"__init__": __init__, method: lambda self: self.data,
                               "__repr__": lambda self: "<IPython.core.display.%s object>" % name})

    module.display = display
    module.HTML = wrapper("HTML", "_repr_html_")
    module.Markdown = wrapper("Markdown", "_repr_markdown_")
    module.SVG = wrapper("SVG", "_repr_svg_")
    module.JSON = wrapper("JSON", "_repr_json_")
    module.Image = wrapper("Image", "_repr_png_", binary=True)


class AfterPyplot:
    """matplotlib.pyplot's own loader, then the runner's backend, unless the code chose another
    (Agg is the image's default, so the environment of the code's subprocesses stays as it was)."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        try:
            if str(module.rcParams["backend"]).lower() == "agg":
                module.switch_backend("module://" + INLINE_BACKEND)
        except Exception as exc:  # figures still open at the end are outputs all the same
            sys.stderr.write("runner: the inline backend is not available: %s: %s\n" % (type(exc).__name__, exc))

    def __getattr__(self, name):
        return getattr(self.loader, name)


class RunnerModules:
    """Modules with no file of their own, for the user's code: matplotlib's inline backend (and the
    hook that turns it on when pyplot is imported) and, when IPython is not installed, `IPython`
    and `IPython.display`."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        import importlib.machinery
        import importlib.util

        if name == "matplotlib.pyplot":
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is not None and spec.loader is not None:
                spec.loader = AfterPyplot(spec.loader)
            return spec
        if name == INLINE_BACKEND or (name in ("IPython", "IPython.display")
                                      and importlib.machinery.PathFinder.find_spec(name, path) is None):
            return importlib.util.spec_from_loader(name, cls, is_package=name == "IPython")
        return None

    @staticmethod
    def create_module(spec):
        return None

    @staticmethod
    def exec_module(module):
        if module.__name__ == INLINE_BACKEND:
            inline_backend(module)
        elif module.__name__ == "IPython.display":
            ipython_display(module)
        else:
            module.get_ipython = lambda: None  # not an IPython shell: libraries that ask behave as in a script
            module.display = display


def use_runner_modules():
    import importlib.machinery  # noqa: F401 -- the finder imports these: loaded first, never through it
    import importlib.util  # noqa: F401

    if RunnerModules not in sys.meta_path:
        sys.meta_path.insert(0, RunnerModules)


def top_level_name(entry):
    """The module a site-packages entry provides (`pkg/`, `mod.py`, `ext.cpython-311-x86_64-linux-gnu.so`), or None."""
    if entry.endswith((".dist-info", ".egg-info", ".pth", ".egg-link")) or entry == "__pycache__":
        return None
    name = entry.split(".", 1)[0]
    return name if name.isidentifier() else None


def shadowed_modules(site_dirs, search_path):
    """The modules of the tenant's site dirs that the image also has on `search_path`, sorted."""
    import importlib.machinery

    found = set()
    for sitedir in site_dirs:
        try:
            entries = os.listdir(sitedir)
        except OSError:
            continue
        for entry in entries:
            name = top_level_name(entry)
            if name and name not in found and importlib.machinery.PathFinder.find_spec(name, search_path) is not None:
                found.add(name)
    return sorted(found)


def preload(modules):
    """Imports the image's libraries in the user's process while the container waits for its job.
    Only the image's own: a tenant whose packages shadow any of them gets nothing preloaded, and its
    code imports its own. A module that fails to import is left out."""
    if not modules:
        return
    shadowed = shadowed_modules(venv_site_dirs(), sys.path)
    if shadowed:
        sys.stderr.write("runner: not preloading: the tenant's packages shadow the image's %s\n" % ", ".join(shadowed[:5]))
        return
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # whatever a module raises, the runner goes on without it
            sys.stderr.write("runner: preloading %s failed: %s: %s\n" % (name, type(exc).__name__, exc))
    if "matplotlib.pyplot" in sys.modules:
        try:  # a first drawing (fonts, the renderer, pandas' plotting), so that the job's figures start warm
            from matplotlib.figure import Figure

            fig = Figure(figsize=(1, 1))
            if "pandas" in sys.modules:
                sys.modules["pandas"].Series([0, 1]).plot(ax=fig.add_subplot())
            else:
                fig.add_subplot().plot([0, 1])
            fig.savefig(io.BytesIO(), format="png")
        except BaseException as exc:
            sys.stderr.write("runner: preparing matplotlib failed: %s: %s\n" % (type(exc).__name__, exc))
    import gc

    # What is imported now stays: the collector leaves it alone, so the code's collections never
    # scan it (a collection writes to every object it visits).
    gc.collect()
    gc.freeze()


class CellDone(BaseException):
    """How a cell ends early (the runner's own frames raise it, never the user's code): its report."""

    def __init__(self, data, exit_code):
        super().__init__()
        self.data = data
        self.exit_code = exit_code


def user_main():
    """The user's process as a script's (or a notebook's) would be: its stdio, the tenant's packages
    ahead of the image's, the runner's modules, display() as a builtin; returns __main__'s namespace."""
    import builtins
    import types

    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
    sys.stdin = open(0, "r", closefd=False)
    use_tenant_packages()
    use_runner_modules()
    builtins.display = display
    module = types.ModuleType("__main__")
    module.__dict__.update({"__file__": "<code>", "__builtins__": builtins, "__cached__": None})
    sys.modules["__main__"] = module
    sys.argv = ["<code>"]
    sys.path.insert(0, WORKSPACE)
    return module.__dict__


def run_cell(job, namespace, kernel=False):
    """Runs one job's code in `namespace` as a notebook cell runs: a last expression's value is kept
    (its repr(), and its rich forms as outputs), and the figures the code leaves open become outputs
    too. Returns (report data, exit code). In a context's kernel (`kernel`), SIGINT interrupts only
    the user's code (KeyboardInterrupt in its frame), and nothing of a process's exit runs."""
    global OUTPUTS
    main_pid = os.getpid()
    OUTPUTS = outputs = Outputs(job.get("max_outputs", 0), job.get("outputs_limit", 0))
    shown = {}  # "value": the last expression's repr()
    try:
        cell(job, namespace, outputs, shown, kernel)
        data, exit_code = {"status": "ok"}, 0
    except CellDone as done:
        data, exit_code = done.data, done.exit_code
    finally:
        if kernel:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the call is over: what is left is the runner's
    if os.getpid() != main_pid:
        os._exit(exit_code)  # a process the user's code forked: only the main one reports
    try:
        outputs.open_figures()  # what the code drew, also when it failed
    except BaseException:
        pass
    data.update(outputs.report(), **shown)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    limit = job["result_limit"]
    for key in ("error", "traceback", "value"):
        if isinstance(data.get(key), str):
            data[key] = data[key][:limit]
    return data, exit_code


def cell(job, namespace, outputs, shown, kernel):
    """The body of run_cell; a CellDone ends it with its report."""
    import atexit
    import linecache

    if job["mode"] == "file":
        filename = os.path.join(WORKSPACE, job["file"])
        try:
            with open(filename, "rb") as f:
                source = f.read()
        except OSError as exc:
            raise CellDone({"status": "exception", "error": "%s: %s" % (type(exc).__name__, exc), "traceback": None}, 1)
    else:
        filename = "<code>"
        source = job["code"].encode("utf-8")
        text = job["code"]
        linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    namespace["__file__"] = filename
    sys.argv = [filename]

    exit_code = 0
    value = None
    try:
        if kernel:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        code, last = split_last_expression(source, filename)
        exec(code, namespace)
        if last is not None:
            value = eval(last, namespace)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            exit_code = (exc.code or 0) & 0xFF
        else:
            print(exc.code, file=sys.stderr)
            exit_code = 1
    except BaseException as exc:  # the user's exception is data, whatever its type
        summary, text = user_traceback(exc)
        sys.stderr.write(text)
        raise CellDone({"status": "exception", "error": summary, "traceback": text}, 1)

    # The value's forms, then the figures still open: before the atexit handlers, pyplot's among
    # them, which close every figure.
    if value is not None:
        try:
            shown["value"] = repr(value)
        except BaseException as exc:  # as Python's own prompt does: the traceback, and no value
            sys.stderr.write(user_traceback(exc)[1])
        try:
            outputs.show(value, "value", rich_only=True, plain=shown.get("value"))
        except BaseException:
            pass
    if kernel:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        outputs.open_figures()
        if kernel and "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")  # as Jupyter's inline backend: a figure is shown once, by its call
    except BaseException:
        pass

    if not kernel:
        try:  # what a normal interpreter exit does: atexit handlers, then wait for non-daemon threads
            atexit._run_exitfuncs()
            if "threading" in sys.modules:
                sys.modules["threading"]._shutdown()
        except Exception:
            pass

    if exit_code != 0:
        raise CellDone({"status": "exit", "exit_code": exit_code}, exit_code)

    variable = job.get("variable")
    if variable:
        if variable not in namespace:
            raise CellDone({"status": "exception", "error": "Variable '%s' not found after execution" % variable,
                            "traceback": None}, 1)
        try:
            result = str(namespace[variable])
        except BaseException as exc:
            summary, text = user_traceback(exc)
            raise CellDone({"status": "exception", "error": "str(%s) failed: %s" % (variable, summary),
                            "traceback": text}, 1)
        limit = job["result_limit"]
        raise CellDone({"status": "ok", "result": result[:limit], "result_truncated": len(result) > limit}, 0)


def write_all(fd, payload):
    try:
        while payload:
            payload = payload[os.write(fd, payload):]
    except OSError:
        pass


def run_user_code(job, namespace):
    """In the user's process: runs the code as __main__ in /workspace and reports on REPORT_FD. Then
    it stops itself: the runner reads the workspace while it is stopped and ends the container
    without waiting for its exit (which, for a process that imported numpy and pandas, costs 10-20
    ms, and more under gVisor). Continued (other processes of the code are left), it exits."""
    data, exit_code = run_cell(job, namespace)
    data["exit_code"] = exit_code
    write_all(REPORT_FD, json.dumps(data, ensure_ascii=False).encode("utf-8", "backslashreplace"))
    for fd in (1, 2, REPORT_FD):
        try:
            os.close(fd)
        except OSError:
            pass
    os.kill(os.getpid(), signal.SIGSTOP)
    os._exit(exit_code)


OOM_FILES = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")
oom_file = None  # its descriptor, once found (-1: none), read anew with pread: one system call a count


def oom_kills():
    """The cgroup's OOM-kill count: memory.events on cgroup v2, memory.oom_control on v1."""
    global oom_file
    if oom_file is None:
        oom_file = -1
        for path in OOM_FILES:
            try:
                oom_file = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                break
            except OSError:
                continue
    try:
        text = os.pread(oom_file, 4096, 0).decode("ascii")
    except (OSError, UnicodeDecodeError):
        return 0
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return 0


def kill_all():
    """SIGKILL every other process in the container (PID 1 itself is spared by the kernel)."""
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass


def reap_all():
    """Waits for every child to end, orphans re-parented to us among them."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def alone(pid):
    """Whether `pid` is the only process of the code (no fork of it is left, not even a zombie)."""
    try:
        return all(name in ("1", str(pid)) for name in os.listdir("/proc") if name.isdigit())
    except OSError:
        return False


def still_stopped(pid):
    """Whether the stopped process `pid` is as it was: not continued, stopped anew, or gone since."""
    try:
        return os.waitpid(pid, os.WNOHANG | os.WUNTRACED | os.WCONTINUED) == (0, 0)
    except ChildProcessError:
        return False


def hold(seconds):
    """After the answer, the container waits for the server to remove it instead of ending (its end
    costs CPU that the answer would wait for: tens of milliseconds under gVisor), the user's process
    still stopped; should anything of the code stir meanwhile (a POSIX timer can continue a stopped
    process), all of it is killed at once. Then it ends by itself."""
    end = time.monotonic() + seconds
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})  # each change of a child's state wakes the wait
    while True:
        try:
            changed, _ = os.waitpid(-1, os.WNOHANG | os.WUNTRACED | os.WCONTINUED)
        except ChildProcessError:
            changed = 0
        if changed:
            kill_all()  # at the first change: a storm of them cannot put it off (each is reaped in turn)
        left = end - time.monotonic()
        if left <= 0:
            break
        if not changed:
            signal.sigtimedwait({signal.SIGCHLD}, left)
    kill_all()


def child_report_limit(job):
    # Four capped strings, up to 4 UTF-8 bytes a character, and the outputs (escaped, at most 6 bytes a byte).
    return 16 * job["result_limit"] + 6 * job.get("outputs_limit", 0) + 128 * job.get("max_outputs", 0) + 65536


def relay(channel, kind, data, sent, limit):
    """Sends what fits of the user's output `data` as frames of `kind` (`sent` counts each kind's bytes
    against `limit`); True when some of it did not fit."""
    room = limit - sent[kind]
    if room > 0:
        channel.output(kind, data[:room])
        sent[kind] += min(room, len(data))
    return len(data) > room


def drain(fd, take, closed=None, most=None):
    """Reads a non-blocking pipe until it is empty (or `most` bytes were read), handing each chunk to
    take(fd, data); at its end, closed(fd) (a kernel's pipes outlive one call, so a context's caller
    passes none)."""
    while most is None or most > 0:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not data:
            if closed:
                closed(fd)
            return
        take(fd, data)
        if most is not None:
            most -= len(data)


class Child:
    """The user's process (or a command's), with the pipes its supervisor watches."""

    def __init__(self, pid, out_r, err_r, rep_r, wake_r, wake_w, go_w, ready):
        self.pid, self.out_r, self.err_r, self.rep_r, self.wake_r, self.wake_w, self.go_w = \
            pid, out_r, err_r, rep_r, wake_r, wake_w, go_w
        self.ready = ready  # False: it died before it was ready (memory ran out in the preload, say)

    def start(self, job):
        """Hands the user's process its one job."""
        write_all(self.go_w, message(job))
        os.close(self.go_w)
        self.go_w = None

    def discard(self):
        """A user's process that gets no job (the job was an install, say): it goes."""
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except OSError:
            pass
        self.close()

    def close(self):
        signal.set_wakeup_fd(-1)
        for fd in (self.out_r, self.err_r, self.rep_r, self.wake_r, self.wake_w, self.go_w):
            if fd is not None:
                os.close(fd)


def spawn(argv=None, proxy=None, modules=(), job=None, fresh=False):
    """Starts the user's process, its stdout, stderr and report on pipes: a command (`argv`: an
    install's steps), or the Python process for the user's code, which runs `job` at once (a cold
    container; its job is handed in memory, so the runner never waits on its preparation, which runs
    the tenant's .pth files), or else imports `modules`, prepares __main__, and waits on JOB_FD for
    its job, or to become a context's kernel. That process is forked from the runner, or, `fresh`,
    a new interpreter (posix_spawn): a warm container's, made while it waits in the pool. A fork
    leaves every page of both processes copy-on-write, and under gVisor each such page costs a
    fault, tens of microseconds, when either next writes it, on the job's path; a new interpreter
    costs hundreds of milliseconds there, which only a process made ahead can afford. With
    `modules`, it returns once they are imported (or the process is dead): the container may say
    it is ready."""
    ahead = argv is None and job is None
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    rep_r, rep_w = os.pipe()
    wake_r, wake_w = os.pipe()
    go_r, go_w = os.pipe() if ahead else (None, None)
    ready_r, ready_w = os.pipe() if ahead and modules else (None, None)
    if job is not None:
        go_r = os.memfd_create("job", os.MFD_CLOEXEC)
        write_all(go_r, message(job))
        os.lseek(go_r, 0, os.SEEK_SET)
    for fd in (out_r, err_r, rep_r, wake_r, wake_w):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)

    devnull = os.open(os.devnull, os.O_RDONLY)
    env = os.environ
    if argv is None:  # the descriptors' numbers as user_process_main() expects them
        given = {0: devnull, REPORT_FD: rep_w, JOB_FD: go_r, READY_FD: ready_w, STAGED_OUT: out_w, STAGED_ERR: err_w}
    else:  # a command gets no report pipe, and the proxy in its environment
        env = dict(env)
        use_proxy(proxy, env)
        given = {0: devnull, 1: out_w, 2: err_w}
    # Out of the way of the numbers they get first: they are given in order.
    moved = {target: fcntl.fcntl(source, fcntl.F_DUPFD_CLOEXEC, FIRST_FREE_FD) for target, source in given.items() if source is not None}
    try:
        if argv is None and not fresh:
            pid = os.fork()
            if pid == 0:
                try:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    set_dumpable()
                    for target, source in moved.items():
                        os.dup2(source, target)
                    user_process_main(modules)
                finally:
                    os._exit(70)
        else:
            if argv is None:
                argv = [sys.executable, "-I", "-B", RUNNER_FILE, USER_PROCESS, ",".join(modules)]
            actions = [(os.POSIX_SPAWN_DUP2, source, target) for target, source in moved.items()]
            pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    finally:
        for fd in (devnull, out_w, err_w, rep_w, go_r, ready_w, *moved.values()):
            if fd is not None:
                os.close(fd)
    ready = True
    if ready_r is not None:
        ready = os.read(ready_r, 1) == b"r"
        os.close(ready_r)
    return Child(pid, out_r, err_r, rep_r, wake_r, wake_w, go_w, ready)


def user_process_main(modules):
    """The user's process, as spawn() starts it (forked, or runner.py --user-process MODULES), its
    descriptors at their numbers: its report,
    job and (with `modules`) ready descriptors are the code's to keep from its own subprocesses;
    it imports `modules` while its stdout and stderr are still the runner's (their warnings go to
    the server's log, never to the job's output), then takes its own."""
    ready = bool(modules)
    os.closerange(FIRST_FREE_FD, 65536)  # anything else its starter left open: the code holds only its own
    if not ready:
        os.closerange(READY_FD, READY_FD + 1)
    for fd in (REPORT_FD, JOB_FD) + ((READY_FD,) if ready else ()):
        os.set_inheritable(fd, False)
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")  # if memory runs out, the user's process goes first, not the runner
    except OSError:
        pass
    use_runner_modules()
    preload(modules)
    for staged, fd in ((STAGED_OUT, 1), (STAGED_ERR, 2)):
        os.dup2(staged, fd)
        os.close(staged)
    user_process(None, ready)


def user_process(job=None, ready=False):
    """The user's process, its descriptors set by spawn(). It says when it is `ready` on READY_FD;
    its first message on JOB_FD is its one job, or {"mode": "kernel"}: it is a context's kernel;
    EOF first: it was discarded."""
    namespace = user_main()
    if ready:
        write_all(READY_FD, b"r")
        os.close(READY_FD)
    if job is None:
        job = read_message(JOB_FD)
        if job is None:
            os._exit(0)
        if job.get("mode") == "kernel":
            kernel_main(namespace)
        os.close(JOB_FD)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    use_proxy(job.get("proxy"))
    run_user_code(job, namespace)


def parse_report(report):
    try:
        child = json.loads(report.decode("utf-8")) if report else {}
    except (ValueError, RecursionError):  # the report pipe is the user's process: anything can be in it
        return {}
    return child if isinstance(child, dict) else {}


def supervise(job, channel, argv=None, deadline=None, sent=None, child=None):
    """Runs the user's code (or `argv`) in a forked child, relays its output as frames within the
    caps, enforces the deadline. `child`: the user's process forked ahead, which gets this job now.
    Returns once no process of the code can run any more: all are gone, or, once the user's process
    has reported and stopped itself (run_user_code), all are killed.

    The steps of one job share its deadline and its output caps: `deadline` (monotonic) and `sent`
    (bytes relayed so far, per kind) carry them from one step to the next.
    """
    oom_before = oom_kills()
    if child is not None:
        child.start(job)
    else:
        child = spawn(argv, job.get("proxy"), job=None if argv else job)
    pid, out_r, err_r, rep_r, wake_r = child.pid, child.out_r, child.err_r, child.rep_r, child.wake_r

    limit = job["output_limit"]
    sent = {b"o": 0, b"e": 0} if sent is None else sent
    kinds = {out_r: b"o", err_r: b"e"}
    open_fds = {out_r, err_r, rep_r}
    report = bytearray()
    report_limit = child_report_limit(job)
    status = reported = left_stopped = None
    timed_out = truncated = False
    deadline = time.monotonic() + job["timeout_s"] if deadline is None else deadline
    poller = select.poll()
    for fd in (out_r, err_r, rep_r, wake_r):
        poller.register(fd, select.POLLIN)

    def take(fd, data):
        nonlocal truncated
        if fd == rep_r:
            if len(report) < report_limit:
                report.extend(data[: report_limit - len(report)])
        elif relay(channel, kinds[fd], data, sent, limit):
            truncated = True
            kill_all()

    def closed(fd):
        poller.unregister(fd)
        open_fds.discard(fd)

    def stopped(still):
        """The user's process stopped (`still` so, or continued since: a stop that is continued
        before it is waited for is never reported as one). Having reported, its run is over.
        Still stopped and alone, it is left so (its end, for one that imported numpy and pandas,
        costs 10-20 ms, more under gVisor; the container's removal ends it); else it and every
        other process of the code are killed at once, and not waited for. With its report pipe
        closed after what is not a report, it is continued, and exits as it would have."""
        nonlocal reported, left_stopped
        if rep_r in open_fds:
            drain(rep_r, take, closed, most=PIPE_MAX)  # all of an honest report is in the pipe now
        said = parse_report(report)
        if isinstance(said.get("exit_code"), int):
            if still and alone(pid):
                left_stopped = pid
            else:
                kill_all()
            reported = said
        elif rep_r not in open_fds:
            os.kill(pid, signal.SIGCONT)
        # else the code stopped itself while it runs, as any process of it may

    while reported is None and (status is None or open_fds):
        if status is not None:
            # The user's process is gone; whatever it left running goes too, so pipes reach EOF.
            kill_all()
        timeout_ms = max(0, int((deadline - time.monotonic()) * 1000))
        for fd, _ in poller.poll(timeout_ms if status is None else 1000):
            if fd == wake_r:
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
            else:
                drain(fd, take, closed, most=PIPE_MAX)  # a pipe kept full cannot keep the deadline from being checked
        while status is None:
            try:
                reaped, raw = os.waitpid(-1, os.WNOHANG)  # exits: the user's process, or orphans re-parented to us
            except ChildProcessError:
                break
            if reaped == 0:
                break
            if reaped == pid:
                status = raw
        if status is None and argv is None:
            # Its own stops only: those of other processes of the code, however many, are none of ours.
            reaped, raw = os.waitpid(pid, os.WNOHANG | os.WUNTRACED | os.WCONTINUED)
            if reaped == pid and (os.WIFSTOPPED(raw) or os.WIFCONTINUED(raw)):
                stopped(os.WIFSTOPPED(raw))
            elif reaped == pid:
                status = raw
        if status is None and reported is None and time.monotonic() >= deadline:
            timed_out = True
            kill_all()
            _, status = os.waitpid(pid, 0)
    if reported is not None:
        for fd in (out_r, err_r):  # all it printed is in the pipes: a stopped or killed process writes no more
            if fd in open_fds:
                drain(fd, take, most=PIPE_MAX)  # should something continue it, it may: what is there now
    else:
        kill_all()
        reap_all()
    child.close()  # an install runs several steps: none keeps the last one's pipes

    if reported is not None:
        exit_code, signaled = reported["exit_code"] & 0xFF, False
    elif os.WIFEXITED(status):
        exit_code, signaled = os.WEXITSTATUS(status), False
    else:
        exit_code, signaled = 128 + os.WTERMSIG(status), True
    return {
        "exit_code": exit_code,
        "signaled": signaled,
        "child": reported if reported is not None else parse_report(report),
        "timed_out": timed_out,
        "truncated": truncated,
        "oom_killed": oom_kills() > oom_before,
        "stopped": left_stopped,  # the user's process, reported and left stopped, alone (see read_changes)
    }


MAX_WARNINGS = 20


def give_back_access(path, st):
    """The code may have taken away its own access (chmod 000 on a file or a directory); the owner
    can always give it back, so that the diff sees, and keeps, everything the code left. A
    directory's is given back before os.walk (top-down) goes into it."""
    try:
        if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o700 != 0o700:
            os.chmod(path, st.st_mode | 0o700)
        elif stat.S_ISREG(st.st_mode) and not st.st_mode & 0o400:
            os.chmod(path, st.st_mode | 0o600)
    except OSError:
        pass


def restore_access(workspace):
    for root, dirs, files in os.walk(workspace, onerror=lambda _: None):
        for name in dirs + files:
            path = os.path.join(root, name)
            try:
                give_back_access(path, os.lstat(path))
            except OSError:
                pass


def send_changed_files(channel, manifest, workspace=WORKSPACE, warnings=None, before_send=None, leased=None):
    """Streams new or changed regular files and new directories as a tar; returns deleted paths.
    What cannot leave (links, fifos, devices, a file that still cannot be read) is named in
    `warnings`, and a file that cannot be read is not reported deleted: the server keeps its copy.
    `before_send`: see FileFrames. `leased`: called when a file cannot be opened because a living
    process holds a lease on it (EWOULDBLOCK: the open never waits for the lease to be given up)."""
    warnings = [] if warnings is None else warnings

    def warn(rel, why):
        if len(warnings) < MAX_WARNINGS:
            warnings.append("%s: %s" % (rel, why))
        elif len(warnings) == MAX_WARNINGS:
            warnings.append("(more entries were not kept)")

    try:
        st = os.stat(workspace)
        if st.st_mode & 0o700 != 0o700:
            os.chmod(workspace, st.st_mode | 0o700)
    except OSError:
        pass
    seen = set()
    with tarfile.open(fileobj=FileFrames(channel, before_send), mode="w|", format=tarfile.PAX_FORMAT) as archive:
        for root, dirs, files in os.walk(workspace):
            for name in sorted(dirs + files):
                path = os.path.join(root, name)
                rel = os.path.relpath(path, workspace)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                give_back_access(path, st)  # one walk: a system call costs tens of microseconds under gVisor
                seen.add(rel)
                if not clean_name(rel):  # the server would drop it: it stays in the sandbox, like a link
                    warn(rel[:200], "its name is longer than a workspace path may be (255 bytes a part, 1024 in all), so it was not kept")
                    continue
                info = tarfile.TarInfo("workspace/" + rel)
                info.mtime = int(st.st_mtime)
                if stat.S_ISDIR(st.st_mode):
                    if manifest.get(rel) == DIRECTORY:
                        continue  # the server has it
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    archive.addfile(info)
                elif stat.S_ISREG(st.st_mode):
                    if manifest.get(rel) == (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
                        continue
                    try:
                        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # never waits on a fifo
                    except OSError as exc:
                        if exc.errno == errno.EWOULDBLOCK and leased:
                            leased()
                        warn(rel, "could not be read (%s), so it was not kept" % exc.strerror)
                        continue
                    with os.fdopen(fd, "rb") as f:
                        opened = os.fstat(f.fileno())
                        if not stat.S_ISREG(opened.st_mode):  # no longer what lstat saw
                            warn(rel, "not a regular file or directory, so it was not kept (only regular files and directories are)")
                            continue
                        info.size = opened.st_size  # no process of the code can run to change it
                        info.mode = 0o644
                        exactly = Exactly(f, info.size)
                        archive.addfile(info, exactly)  # streamed, never whole in memory
                        if exactly.short:  # a system call of a killed process, under way at the kill, cut it
                            warn(rel, "it became shorter while it was read; the rest is zero bytes")
                else:  # links, fifos, sockets and devices never leave the sandbox
                    kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file or directory"
                    warn(rel, "%s, so it was not kept (only regular files and directories are)" % kind)
    return sorted(rel for rel in manifest if rel not in seen)


def build_report(outcome, job, deleted=(), run_ms=0, warnings=(), **extra):
    """The one report of a job: what supervise() saw, what the user's process said, within caps."""
    child = outcome.get("child", {})
    limit = job.get("result_limit", 0)

    def text(key):  # the child is the user's process: keep only strings, and only so much
        value = child.get(key)
        return value[:limit] if isinstance(value, str) else None

    status = child.get("status")
    error = None
    if status not in ("ok", "exception", "exit"):
        # No report from the user's process: it was killed, or left through os._exit().
        status = "killed" if outcome.get("signaled") else "exit"
        if status == "exit" and outcome["exit_code"] == 0 and job.get("variable"):
            status = "exception"
            error = "The code exited before variable '%s' could be read" % job["variable"]
    outputs, outputs_truncated = clean_outputs(child.get("outputs"), child.get("outputs_truncated"),
                                               job.get("max_outputs", 0), job.get("outputs_limit", 0))
    return {
        "protocol": PROTOCOL,
        "exit_code": outcome["exit_code"],
        "timed_out": outcome.get("timed_out", False),
        "truncated": outcome.get("truncated", False),
        "oom_killed": outcome.get("oom_killed", False),
        "status": status,
        "error": error or text("error"),
        "traceback": text("traceback"),
        "result": text("result"),
        "result_truncated": child.get("result_truncated") is True,
        "value": text("value"),
        "outputs": outputs,
        "outputs_truncated": outputs_truncated,
        "deleted": list(deleted),
        "warnings": list(warnings),
        "run_ms": run_ms,
        **extra,
    }


def run_list_packages(job, channel, manifest):
    return build_report({"exit_code": 0, "child": {"status": "ok"}}, job, packages=installed_packages())


def normalized(name):
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def read_resolution(path, limit=64 << 20):
    """What pip's --dry-run --report says it would install, in its order: name, version, whether the
    user asked for it, the names it requires, and whether it comes as a source distribution or from
    a direct URL. The file was written where a source distribution's build ran: the server checks it."""
    import re

    with open(path, "rb") as f:
        report = json.loads(f.read(limit).decode("utf-8"))
    resolved = []
    for item in report["install"]:
        metadata = item["metadata"]
        url = str(item.get("download_info", {}).get("url", "")).split("#")[0]
        requires = []
        for spec in metadata.get("requires_dist") or []:
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
            if match and normalized(match.group(1)) not in requires:
                requires.append(normalized(match.group(1)))
        resolved.append({
            "name": normalized(metadata["name"]),
            "version": str(metadata["version"]),
            "requested": item.get("requested") is True,
            "requires": requires,
            "sdist": not url.endswith(".whl"),
            "direct": item.get("is_direct") is True,
        })
    return resolved


def pins(items):
    return ["%s==%s" % (item["name"], item["version"]) for item in items]


def run_resolve(job, channel, manifest):
    """Phase one of an install, with the packages volume read-only: what pip would install (the
    server checks every name before anything is written), and wheels built from any source
    distributions among them (sent back as files, so that phase two runs no build)."""
    used = usage(PACKAGES)
    over = over_cap(job, used)
    if over:
        return build_report(refused(over), job, packages=installed_packages(), usage={"bytes": used[0], "files": used[1]})
    os.makedirs(SCRATCH + "/tmp", exist_ok=True)
    os.environ["TMPDIR"] = SCRATCH + "/tmp"  # downloads and builds: in memory, within the scratch cap
    deadline, sent = time.monotonic() + job["timeout_s"], {b"o": 0, b"e": 0}
    report_file = SCRATCH + "/report.json"
    requirements = job.get("requirements") or [job["requirement"]]  # a set of declared dependencies, or one package
    upgrade = ["--upgrade", "--upgrade-strategy", "only-if-needed"] if job.get("upgrade") else []
    outcome = supervise(job, channel, pip_command(sys.executable, "install", "--dry-run", "--report", report_file,
                                                  *upgrade, *job["pip_args"], "--", *requirements), deadline, sent)
    resolved = []
    if outcome["exit_code"] == 0:
        try:
            resolved = read_resolution(report_file)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            outcome = refused("pip's resolution report could not be read (%s)" % type(exc).__name__)
    sdists = [item for item in resolved if item["sdist"] and not item["direct"]]
    if sdists and outcome["exit_code"] == 0:
        outcome = supervise(job, channel, pip_command(sys.executable, "wheel", "--no-deps", "-w", WORKSPACE + "/built",
                                                      *job["pip_args"], "--", *pins(sdists)), deadline, sent)
    send_changed_files(channel, manifest)
    return build_report(outcome, job, packages=installed_packages(), resolved=resolved, usage={"bytes": used[0], "files": used[1]})


def run_install(job, channel, manifest):
    """Phase two, with the volume writable: exactly the checked pins, wheels only (no build runs),
    unpacked first in /scratch, a tmpfs capped at the room the tenant has left, and installed into
    the volume only when they fit PACKAGES_MAX_MB and PACKAGES_MAX_FILES."""
    import shutil

    before = installed_packages()
    shutil.rmtree(PACKAGES + "/.tmp", ignore_errors=True)  # the on-disk scratch of runners before protocol 4
    used = usage(PACKAGES)
    over = over_cap(job, used)
    if over:
        return build_report(refused(over), job, packages=before, changed=[])
    os.makedirs(SCRATCH + "/tmp", exist_ok=True)
    os.environ["TMPDIR"] = SCRATCH + "/tmp"
    deadline, sent = time.monotonic() + job["timeout_s"], {b"o": 0, b"e": 0}
    wheels, unpacked = SCRATCH + "/wheels", SCRATCH + "/unpacked"
    built = ["--find-links", WHEELHOUSE + "/built"] if os.path.isdir(WHEELHOUSE + "/built") else []
    only = ["--no-deps", "--only-binary", ":all:"]
    local = [*only, "--no-index", "--find-links", wheels, "--no-warn-script-location"]
    steps = [  # quiet: their errors still show, and the last step's output says what was installed
        (sys.executable, "download", "--quiet", *only, "-d", wheels, *job["pip_args"], *built),
        # --root, not --target: the same layout as the venv, and what ran out of room stays there to be seen.
        (sys.executable, "install", "--quiet", *local, "--ignore-installed", "--root", unpacked),
    ]
    outcome = None
    for step in steps:
        outcome = supervise(job, channel, pip_command(*step, "--", *job["pins"]), deadline, sent)
        if outcome["exit_code"] != 0:
            ran_out = None if outcome["timed_out"] else scratch_ran_out(job, used)
            outcome = refused(ran_out) if ran_out else outcome
            break
    else:
        adding = usage(unpacked)
        shutil.rmtree(unpacked, ignore_errors=True)
        over = over_cap(job, used, adding)
        if over:
            outcome = refused(over)
        else:
            if not os.path.exists(VENV + "/pyvenv.cfg"):
                import venv

                venv.EnvBuilder(system_site_packages=True, with_pip=False, symlinks=True).create(VENV)
            outcome = supervise(job, channel, pip_command(VENV + "/bin/python", "install", *local, "--", *job["pins"]),
                                deadline, sent)
    after = installed_packages()
    changed = sorted(name for name, version in after.items() if before.get(name) != version)
    used = usage(PACKAGES)
    return build_report(outcome, job, packages=after, changed=changed, usage={"bytes": used[0], "files": used[1]})


def run_code(job, channel, manifest, child=None):
    """The user's code (`code`, or a workspace `file`), then the workspace's changes."""
    started = time.monotonic()
    outcome = supervise(job, channel, child=child)
    run_ms = int((time.monotonic() - started) * 1000)
    warnings = []
    deleted = read_changes(channel, manifest, warnings, outcome.pop("stopped"))
    return build_report(outcome, job, deleted=deleted, run_ms=run_ms, warnings=warnings)


def read_changes(channel, manifest, warnings, stopped=None):
    """The workspace's changes, sent (see send_changed_files), with no process of the code able to
    change them meanwhile. `stopped`: the user's process, left stopped by supervise() rather than
    killed, alone. Something may continue it (a POSIX timer, or a lease's or a dnotify's signal, sent
    as the walk opens its files), so it is watched while the workspace is read: its SIGCHLD, or a
    change found when it is checked (first, before the first frames of the walk would leave, and
    last), stops the walk at once; it and all are killed and the workspace read anew, what was held
    of the first walk dropped. So does a file it holds a lease on (a lease with no signal of its
    choice leaves it stopped, the file unreadable). A walk too big to hold kills it before its first
    frames leave."""
    if stopped is None:
        return send_changed_files(channel, manifest, warnings=warnings)
    mark, count = len(channel.held), len(warnings)
    quiet = signal.getsignal(signal.SIGCHLD)
    moved = []
    checked = []  # before_send() ran: the check before the first frames left is done

    def on_child(*_):
        if not moved:
            moved.append(True)
            raise Moved()

    def unwatched():
        """Stops watching; whether it stayed as it was all along."""
        signal.signal(signal.SIGCHLD, quiet)
        return not moved and still_stopped(stopped)

    def before_send():
        checked.append(True)
        if not unwatched():
            raise Moved()
        kill_all()  # what was read so far stands; the rest is read with nothing of the code left

    signal.signal(signal.SIGCHLD, on_child)
    try:
        if not still_stopped(stopped):
            moved.append(True)  # its SIGCHLD, still to come, must not raise again
            raise Moved()
        deleted = send_changed_files(channel, manifest, warnings=warnings, before_send=before_send, leased=on_child)  # a leased file: as if it moved
        if not checked and not unwatched():  # all of it is held: nothing has left yet
            raise Moved()
        return deleted
    except Moved:
        signal.signal(signal.SIGCHLD, quiet)
        kill_all()
        reap_all()  # it was running: not even a system call of it may still be under way
        channel.held = channel.held[:mark]
        del warnings[count:]
        return send_changed_files(channel, manifest, warnings=warnings)
    finally:
        signal.signal(signal.SIGCHLD, quiet)


# A context keeps one interpreter, its kernel, alive between jobs: the user's process, to which this
# one hands each call's job and whose output it relays, as supervise() does for a one-shot job.


def read_message(fd, limit=1 << 30):
    """One [length: 4 bytes big-endian][JSON] message from a pipe; None when it is closed first."""
    data = read_exact(fd, 4)
    if data is None:
        return None
    (length,) = struct.unpack(">I", data)
    if length > limit:
        raise ValueError("message of %d bytes" % length)
    data = read_exact(fd, length)
    return None if data is None else json.loads(data.decode("utf-8"))


def read_exact(fd, size):
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data.extend(chunk)
    return bytes(data)


def message(obj):
    payload = json.dumps(obj, ensure_ascii=False).encode("utf-8", "backslashreplace")
    return struct.pack(">I", len(payload)) + payload


def use_proxy(proxy, environ=os.environ):
    """The egress proxy, with this execution's (or call's) credential: the only way out of the
    sandbox's network (it has no DNS and no other route), for urllib, requests, pip. None: no proxy."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        if proxy:
            environ[name] = proxy
        else:
            environ.pop(name, None)
    for name in ("NO_PROXY", "no_proxy"):
        environ.pop(name, None)


def kernel_main(namespace):
    """The kernel (a context's user process): one __main__ namespace for every call, each call's job
    read from JOB_FD and its report written to REPORT_FD. Between calls SIGINT is ignored; during
    one it raises KeyboardInterrupt in the user's code (the call's timeout)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        job = read_message(JOB_FD)
        if job is None:
            os._exit(0)
        use_proxy(job.get("proxy"))  # each call's own credential, which expires with the call
        data, exit_code = run_cell(job, namespace, kernel=True)
        data["exit_code"] = exit_code
        write_all(REPORT_FD, message(data))


class Kernel:
    """The runner's side of a context's kernel: starts it, runs one call in it at a time, and says
    when it is lost (OOM-killed, dead, or not back from an interrupt within its grace period)."""

    def __init__(self, child):
        """`child`: the user's process (spawn()), which becomes the kernel."""
        write_all(child.go_w, message({"mode": "kernel"}))
        self.pid, self.job_w, self.rep_r, self.wake_r = child.pid, child.go_w, child.rep_r, child.wake_r
        self.out = {child.out_r: b"o", child.err_r: b"e"}
        self.status = None  # the kernel's wait status, once it is gone

    def reap(self):
        """Reaps every child that ended (the code's orphans come to PID 1 too); True once the kernel has."""
        while True:
            try:
                reaped, raw = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if reaped == 0:
                break
            if reaped == self.pid:
                self.status = raw
        return self.status is not None

    def call(self, job, channel):
        """Runs one job's code in the kernel; returns (outcome as supervise() gives it, why the kernel is lost or None)."""
        limit = job["output_limit"]
        sent = {b"o": 0, b"e": 0}
        report_limit = child_report_limit(job)
        report = bytearray()
        child = None
        lost = None
        timed_out = truncated = interrupted = False
        deadline = time.monotonic() + job["timeout_s"]
        grace = job.get("interrupt_grace_s", 2)
        oom_before = oom_kills()
        try:
            payload = message(job)
            while payload:
                payload = payload[os.write(self.job_w, payload):]
        except OSError:  # EPIPE: the kernel is gone
            lost = "died"
        poller = select.poll()
        for fd in (*self.out, self.rep_r, self.wake_r):
            poller.register(fd, select.POLLIN)

        def interrupt():
            nonlocal interrupted, deadline
            if not interrupted:
                interrupted = True
                deadline = time.monotonic() + grace
                try:
                    os.kill(self.pid, signal.SIGINT)
                except OSError:
                    pass

        def take(fd, data):
            nonlocal truncated
            if relay(channel, self.out[fd], data, sent, limit) and not truncated:
                truncated = True
                interrupt()

        while child is None and lost is None:
            timeout_ms = max(0, int((deadline - time.monotonic()) * 1000))
            for fd, _ in poller.poll(timeout_ms):
                if fd == self.wake_r:
                    try:
                        os.read(self.wake_r, 4096)
                    except BlockingIOError:
                        pass
                elif fd == self.rep_r:
                    try:
                        report.extend(os.read(self.rep_r, 65536))
                    except BlockingIOError:
                        pass
                else:
                    drain(fd, take, most=PIPE_MAX)  # a pipe kept full cannot keep the deadline from being checked
            if len(report) >= 4:
                (length,) = struct.unpack(">I", bytes(report[:4]))
                if length > report_limit:
                    lost = "died"  # the code wrote on the kernel's report pipe: the kernel cannot be trusted
                elif len(report) >= 4 + length:
                    try:
                        child = json.loads(bytes(report[4:4 + length]).decode("utf-8"))
                    except (ValueError, RecursionError):
                        child = None
                    if not isinstance(child, dict):
                        lost, child = "died", None
            if child is None and lost is None and self.reap():
                lost = "oom" if oom_kills() > oom_before else "died"
            if child is None and lost is None and time.monotonic() >= deadline:
                if interrupted:
                    lost = "unresponsive"
                else:
                    timed_out = True
                    interrupt()
        for fd in self.out:  # what it printed before its report is in the pipes already
            drain(fd, take, most=PIPE_MAX)
        poller = None
        if lost:
            kill_all()
            while not self.reap():
                try:
                    os.waitpid(self.pid, 0)
                except ChildProcessError:
                    break
        status = self.status
        if child is not None:
            exit_code = child.get("exit_code") if isinstance(child.get("exit_code"), int) else 1
            outcome = {"exit_code": exit_code & 0xFF, "signaled": False, "child": child}
        elif status is not None and os.WIFSIGNALED(status):
            outcome = {"exit_code": 128 + os.WTERMSIG(status), "signaled": True, "child": {}}
        else:
            outcome = {"exit_code": os.WEXITSTATUS(status) if status is not None else 137, "signaled": status is None, "child": {}}
        outcome.update(timed_out=timed_out or lost == "unresponsive", truncated=truncated,
                       oom_killed=oom_kills() > oom_before)
        return outcome, lost


class FramedInput:
    """One job's tar on a context's stdin, read as a file: frames of [length: 4 bytes big-endian]
    [payload], an empty frame ends the job. `closed` once stdin ended (the context is over)."""

    def __init__(self, fd, head=b""):
        self.fd = fd
        self.head = head  # bytes of the first header, already read
        self.left = 0
        self.ended = False
        self.closed = False

    def _exact(self, size):
        data = self.head[:size]
        self.head = self.head[size:]
        rest = read_exact(self.fd, size - len(data)) if len(data) < size else b""
        if rest is None:
            self.closed = self.ended = True
            return None
        return data + rest

    def begin(self):
        """Reads up to the job's first bytes; False when stdin ended first (no job comes)."""
        self._header()
        return not self.closed

    def _header(self):
        while not self.ended and self.left == 0:
            header = self._exact(4)
            if header is None:
                return
            (self.left,) = struct.unpack(">I", header)
            if self.left > MAX_FRAME:
                raise ValueError("job frame of %d bytes" % self.left)
            self.ended = self.left == 0

    def read(self, size=-1):
        self._header()
        if self.ended:
            return b""
        data = os.read(self.fd, self.left if size is None or size < 0 else min(size, self.left))
        if not data:
            self.closed = self.ended = True
        self.left -= len(data)
        return data

    def finish(self):
        """Reads what is left of this job (the tar's padding) up to its empty frame."""
        while not self.ended:
            self.read(MAX_FRAME)


def run_context(channel, head, ahead=None):
    """A context's container: the first job (mode `context`) starts the kernel (the user's process
    forked `ahead`, in a warm container), each job after it is one call, answered like a one-shot
    job (frames, the workspace's changes, the report, done). A kernel lost ends the container: the
    report says why (`lost`)."""
    kernel = None
    while True:
        stream = FramedInput(0, head)
        head = b""
        if not stream.begin():
            return 0  # stdin closed: the context is over
        job, manifest = receive_job(stream)
        stream.finish()
        if job is None:
            return 0  # stdin closed: the context is over
        if job.get("protocol") != PROTOCOL or job.get("mode") not in ("context", "code", "file"):
            sys.stderr.write("runner: context job of protocol %r, mode %r\n" % (job.get("protocol"), job.get("mode")))
            return 2
        channel.streaming = job.get("stream") is not False
        if kernel is None:
            if job["mode"] != "context":
                sys.stderr.write("runner: a context starts with a job of mode context\n")
                return 2
            kernel = Kernel(ahead or spawn())
            report = build_report({"exit_code": 0, "child": {"status": "ok"}}, job)
        else:
            mirror_workspace(manifest)
            started = time.monotonic()
            outcome, lost = kernel.call(job, channel)
            run_ms = int((time.monotonic() - started) * 1000)
            warnings = []
            deleted = send_changed_files(channel, manifest, warnings=warnings)
            report = build_report(outcome, job, deleted=deleted, run_ms=run_ms, warnings=warnings,
                                  **({"lost": lost} if lost else {}))
        channel.finish(report)
        if report.get("lost"):
            return 0


MODES = {"list-packages": run_list_packages, "resolve": run_resolve, "install": run_install, "code": run_code, "file": run_code}


def main():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # with no handler, the kernel drops it for PID 1
    try:
        make_undumpable()
    except OSError as exc:
        sys.stderr.write("runner: %s\n" % exc)
        return 2
    channel = Channel(os.dup(1))
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # stray prints from this process can never reach the protocol stream
    prepare_matplotlib()
    use_runner_modules()
    ahead = None
    if PRELOAD:
        ahead = spawn(modules=PRELOAD, fresh=True)  # the user's process, made while the container waits in the pool
        if not ahead.ready:
            sys.stderr.write("runner: the user's process died while it preloaded; the job's will import on its own\n")
            ahead.discard()
            ahead = None
        channel.send(b"w", b"")  # imported: the job may come
    head = os.read(0, 1)
    if ahead and not head:
        ahead.discard()
    if head == b"\x00":  # a frame's header (frames are at most 64 KiB): a context, one job after another
        return run_context(channel, head, ahead)
    try:
        job, manifest = receive_job(Prepended(head, sys.stdin.buffer))
    except (tarfile.TarError, ValueError, OSError) as exc:
        sys.stderr.write("runner: bad job: %s\n" % exc)
        return 2
    if job is None:
        return 0  # stdin closed without a job: nothing to do
    if job.get("protocol") != PROTOCOL or job.get("mode") not in MODES:
        sys.stderr.write("runner: job of protocol %r, mode %r; this runner speaks protocol %d\n"
                         % (job.get("protocol"), job.get("mode"), PROTOCOL))
        return 2
    channel.streaming = job.get("stream") is not False
    if ahead and job["mode"] in ("code", "file"):
        report = run_code(job, channel, manifest, child=ahead)
    else:
        if ahead:
            ahead.discard()
        report = MODES[job["mode"]](job, channel, manifest)
    channel.finish(report)
    hold(job.get("hold_s", 0))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == [USER_PROCESS]:
        try:
            user_process_main([name for name in sys.argv[2].split(",") if name])
        finally:
            os._exit(70)  # it never returns; should it, it is not the runner
    sys.exit(main())
