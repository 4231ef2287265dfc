#!/usr/bin/env python3
"""deploy/Dockerfile checked without a Docker engine (CTest `deploy_dockerfile`, label "deploy").

  dockerfile_test.py --repo REPO_ROOT --tollgate BUILT_TOLLGATE_BINARY

1. Every -D option of every `cmake -S` in the Dockerfile is used by the CMake project: each
   command is configured here in a fresh scratch folder with the same options (ARG defaults put
   in), plus one made-up option, and CMake's "Manually-specified variables were not used by the
   project" list must name the made-up one and nothing else. The CUDA variant's configure needs
   nvcc (/usr/local/cuda/bin/nvcc or PATH); without one its options are checked by name against
   the CMake files and the output says so.
2. The build stages install only packages of scripts/setup.sh's list (so the image builds from
   what the project is known to build with), and every package of that list the build needs
   is there (the list minus the test-, benchmark- and run-only packages named in TEST_ONLY).
3. Every shared library the built binary loads (ldd, transitively) belongs to a Debian package
   (dpkg -S) that a runtime-stage package is or depends on (dpkg's Depends, transitively), or to
   the base image's libc6/libgcc-s1/libstdc++6: so the image would start. No -dev package at
   run time.
4. The image's defaults agree with the gateway: EXPOSE and HEALTHCHECK use TOLLGATE_LISTEN's
   port and /healthz, the spool volume is TOLLGATE_SPOOL_DIR, USER is not root, ENTRYPOINT is
   where the build stage installs the binary, CMD is a real subcommand and the config it names
   is installed.
"""

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

from checks import check, finish  # tests/deploy/checks.py


# scripts/setup.sh packages the image does not need: tests, benchmarks, the local PostgreSQL,
# end-to-end clients, deploy lint tools.
TEST_ONLY = {
    "postgresql", "libgtest-dev", "libgmock-dev", "libbenchmark-dev", "chromium", "prometheus", "curl",
    "golang-go", "golang-github-masterminds-sprig-dev", "golang-k8s-sigs-yaml-dev", "yamllint",
    "docker-compose", "python3-yaml",
    "clang", "libclang-rt-14-dev", "llvm",  # libFuzzer targets (tests/fuzz)
    "openssl",  # the CLI: test certificates (tests/e2e lifecycle)
}
# Build-stage packages not in setup.sh's list, and why.
BUILD_EXTRA = {
    "npm": "setup.sh installs npm when no npm is on PATH (Debian's nodejs has none); the dashboard build runs npm ci",
}
# In the debian:12-slim base image (apt depends on them).
BASE_IMAGE = {"libc6", "libgcc-s1", "libstdc++6"}


def parse_dockerfile(path):
    """[(stage name, base, [(instruction, text)])] with continuation lines joined; global ARGs."""
    lines, buf = [], ""
    for raw in open(path):
        line = raw.rstrip("\n")
        if not buf and (line.lstrip().startswith("#") or not line.strip()):
            continue
        if buf and line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        lines.append(buf + line)
        buf = ""
    stages, args = [], {}
    for line in lines:
        word, _, rest = line.strip().partition(" ")
        word = word.upper()
        if word == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), re.I)
            stages.append((m.group(2), m.group(1), []))
        elif word == "ARG" and not stages:
            k, _, v = rest.strip().partition("=")
            args[k] = v
        else:
            if word == "ARG" and "=" in rest:
                k, _, v = rest.strip().partition("=")
                args.setdefault(k, v)
            stages[-1][2].append((word, rest.strip()))
    return stages, args


def apt_packages(run_text, args):
    pkgs = []
    for m in re.finditer(r"apt-get install ((?:-\S+\s+)*)([^&;|]+)", run_text):
        for p in m.group(2).split():
            if not p.startswith("-"):
                pkgs.append(re.sub(r"\$\{(\w+)\}", lambda v: args.get(v.group(1), ""), p))
    return pkgs


def setup_packages(repo):
    text = open(os.path.join(repo, "scripts", "setup.sh")).read()
    body = re.search(r"^packages=\((.*?)^\)", text, re.S | re.M).group(1)
    return {w for line in body.splitlines() for w in line.split("#")[0].split()}


def stage_chain(stages, name):
    """The stage and the stages it is built FROM, nearest first."""
    by_name = {s[0]: s for s in stages}
    chain = []
    while name in by_name:
        chain.append(by_name[name])
        name = by_name[name][1]
    return chain


def check_cmake(repo, stages, args):
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.access("/usr/local/cuda/bin/nvcc", os.X_OK) else None)
    cmake_files = ""
    for d, _, files in os.walk(repo):
        if "/build" in d[len(repo):] or "node_modules" in d or "/.git" in d:
            continue
        for f in files:
            if f == "CMakeLists.txt" or f.endswith(".cmake"):
                cmake_files += open(os.path.join(d, f), errors="replace").read()
    n = 0
    for name, _, instrs in stages:
        for word, text in instrs:
            if word != "RUN" or "cmake -S" not in text:
                continue
            cmd = text[text.index("cmake -S"):].split("&&")[0]
            words = shlex.split(re.sub(r"\$\{(\w+)\}", lambda v: args.get(v.group(1), ""), cmd))
            opts = [w for w in words if w.startswith("-D")]
            n += 1
            cuda = "-DENABLE_CUDA=ON" in opts
            opts = [("-DCMAKE_CUDA_COMPILER=" + (nvcc or "")) if o.startswith("-DCMAKE_CUDA_COMPILER=") else o for o in opts]
            if cuda and not nvcc:
                print(f"NOTE: stage {name}: no nvcc here, so its configure is not run; option names checked in the CMake files only",
                      flush=True)
                for o in opts:
                    var = o[2:].split("=")[0].split(":")[0]
                    check(var.startswith("CMAKE_") or re.search(rf"\b{var}\b", cmake_files),
                          f"stage {name}: -D{var} appears in no CMake file")
                continue
            scratch = tempfile.mkdtemp(prefix="tollgate-dockerfile-cmake-")
            try:
                r = subprocess.run(["cmake", "-S", repo, "-B", scratch] + opts + ["-DTOLLGATE_DOCKERFILE_TEST_BOGUS=1"],
                                   capture_output=True, text=True, timeout=300)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            out = r.stdout + r.stderr
            if not check(r.returncode == 0, f"stage {name}: cmake {' '.join(opts)} failed:\n{out[-3000:]}"):
                continue
            m = re.search(r"Manually-specified variables were not used by the project:\n\n((?:    \S+\n)+)", out)
            unused = set(m.group(1).split()) if m else set()
            check("TOLLGATE_DOCKERFILE_TEST_BOGUS" in unused,
                  f"stage {name}: CMake did not report the made-up option: the unused-option check cannot work")
            unused.discard("TOLLGATE_DOCKERFILE_TEST_BOGUS")
            check(not unused, f"stage {name}: options not used by the CMake project: {sorted(unused)}")
            print(f"stage {name}: cmake {' '.join(opts)}: every option used", flush=True)
    check(n >= 1, "no `cmake -S` in the Dockerfile")


def dpkg_owners(paths):
    """{library path: Debian package} in one `dpkg -S` (it reads every package's file list, ~1 s)."""
    spellings = {}
    for path in paths:
        cands = {path, os.path.realpath(path)}
        # /lib is a symlink to /usr/lib on merged-/usr systems; dpkg knows one spelling.
        for c in list(cands):
            if c.startswith("/usr/lib/"):
                cands.add(c.replace("/usr/lib/", "/lib/", 1))
            elif c.startswith("/lib/"):
                cands.add(c.replace("/lib/", "/usr/lib/", 1))
        spellings[path] = cands
    every = sorted({c for cs in spellings.values() for c in cs})
    r = subprocess.run(["dpkg", "-S"] + every, capture_output=True, text=True)
    owner = {}
    for line in r.stdout.splitlines():
        pkgs, _, f = line.partition(": ")
        owner[f.strip()] = pkgs.split(",")[0].split(":")[0].strip()
    return {p: next((owner[c] for c in sorted(cs) if c in owner), None) for p, cs in spellings.items()}


def depends_closure(pkgs):
    seen, todo = set(), list(pkgs)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        r = subprocess.run(["dpkg-query", "-W", "-f=${Depends}, ${Pre-Depends}", p], capture_output=True, text=True)
        if r.returncode != 0:
            check(False, f"runtime package {p} is not known to dpkg here: cannot follow its dependencies")
            continue
        for alt in r.stdout.split(","):
            for dep in alt.split("|"):
                d = dep.strip().split(" ")[0].split(":")[0]
                if d:
                    todo.append(d)
    return seen


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--tollgate", required=True)
    a = ap.parse_args()
    repo = os.path.realpath(a.repo)
    for tool in ("cmake", "dpkg", "dpkg-query", "ldd"):
        if not shutil.which(tool):
            sys.exit(f"deploy_dockerfile: {tool} not found (Debian 12 tools; scripts/setup.sh)")
    if not os.access(a.tollgate, os.X_OK):
        sys.exit(f"deploy_dockerfile: {a.tollgate} does not exist; build the tollgate target first")
    stages, args = parse_dockerfile(os.path.join(repo, "deploy", "Dockerfile"))
    names = [s[0] for s in stages]
    print(f"stages: {names}; ARG defaults: {args}", flush=True)
    check(stages[-1][0] == "runtime", "the last stage (the default target) must be `runtime`")
    check("runtime-cuda" in names, "no runtime-cuda stage (the CUDA variant)")
    for name, base, _ in stages:
        if base.startswith("${") or ":" in base:
            image = re.sub(r"\$\{(\w+)\}", lambda v: args.get(v.group(1), ""), base)
            check(image.startswith("debian:12"), f"stage {name}: base {image} is not Debian 12")

    # 1. CMake options.
    check_cmake(repo, stages, args)

    # 2. Build-stage packages against scripts/setup.sh.
    setup = setup_packages(repo)
    build_pkgs, runtime_pkgs = set(), set()
    for name, _, instrs in stages:
        pkgs = {p for w, t in instrs if w == "RUN" for p in apt_packages(t, args)}
        if name.startswith("build"):
            build_pkgs |= {p for p in pkgs if "cuda" not in p and "cublas" not in p}
    for name in ("runtime", "runtime-cuda"):
        for st in stage_chain(stages, name):
            runtime_pkgs |= {p for w, t in st[2] if w == "RUN" for p in apt_packages(t, args)
                             if "cuda" not in p and "cublas" not in p}
    extra = build_pkgs - setup - set(BUILD_EXTRA)
    check(not extra, f"build stage installs packages not in scripts/setup.sh: {sorted(extra)}")
    missing = setup - TEST_ONLY - build_pkgs
    check(not missing, f"build stage lacks packages of scripts/setup.sh the build needs: {sorted(missing)}")
    check(not TEST_ONLY & build_pkgs, f"build stage installs test-only packages {sorted(TEST_ONLY & build_pkgs)}")
    print(f"build packages ({len(build_pkgs)}) match scripts/setup.sh; extra: {BUILD_EXTRA}", flush=True)

    # 3. Runtime libraries.
    check(not [p for p in runtime_pkgs if p.endswith("-dev")], f"-dev packages at run time: {sorted(runtime_pkgs)}")
    r = subprocess.run(["ldd", a.tollgate], capture_output=True, text=True)
    check(r.returncode == 0 and "not found" not in r.stdout, f"ldd {a.tollgate}: {r.stdout}{r.stderr}")
    libs = re.findall(r"=>\s+(/\S+)", r.stdout) + re.findall(r"^\s+(/\S+)\s+\(", r.stdout, re.M)
    needed = subprocess.run(["readelf", "-d", a.tollgate], capture_output=True, text=True).stdout
    direct = set(re.findall(r"\(NEEDED\)\s+Shared library: \[(\S+)\]", needed))
    provided = depends_closure(runtime_pkgs | BASE_IMAGE)
    owners = dpkg_owners(libs)
    for lib in libs:
        pkg = owners[lib]
        if not check(pkg, f"{lib}: no Debian package owns it"):
            continue
        is_direct = os.path.basename(lib) in direct
        if is_direct:
            check(pkg in runtime_pkgs or pkg in BASE_IMAGE,
                  f"{os.path.basename(lib)} (NEEDED by tollgate) is in {pkg}, which the runtime stage does not install")
        check(pkg in provided, f"{lib} ({pkg}) is not installed by the runtime stage's packages or their dependencies")
    print(f"runtime: {len(libs)} shared libraries ({len(direct)} direct) all from runtime-stage packages "
          f"{sorted(runtime_pkgs)} or the base image", flush=True)

    # 4. Defaults of the runtime image.
    base = stage_chain(stages, "runtime")
    instrs = [i for st in reversed(base) for i in st[2]]
    get = lambda w: [t for x, t in instrs if x == w]
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(get("ENV"))))
    listen_port = env.get("TOLLGATE_LISTEN", ":").rsplit(":", 1)[1]
    check(listen_port and get("EXPOSE") == [listen_port], f"EXPOSE {get('EXPOSE')} is not TOLLGATE_LISTEN's port {listen_port}")
    hc = " ".join(get("HEALTHCHECK"))
    check(f"http://127.0.0.1:{listen_port}/healthz" in hc, f"HEALTHCHECK {hc} does not probe /healthz on {listen_port}")
    check("curl" in runtime_pkgs or "curl" not in hc, "HEALTHCHECK uses curl, which the runtime stage does not install")
    check(env.get("TOLLGATE_SPOOL_DIR", "?") in " ".join(get("VOLUME")), "the spool dir is not a VOLUME")
    check(env.get("TOLLGATE_MODEL_DIR", "?") in " ".join(get("VOLUME")), "the models dir is not a VOLUME")
    for name in ("runtime", "runtime-cuda"):
        users = [t for st in reversed(stage_chain(stages, name)) for x, t in st[2] if x == "USER"]
        check(users and users[-1] not in ("root", "0"), f"{name}: runs as {users[-1] if users else 'root'}")
    entry = " ".join(get("ENTRYPOINT"))
    check("/usr/local/bin/tollgate" in entry, f"ENTRYPOINT {entry}")
    build_text = " ".join(t for st in stages if st[0] and st[0].startswith("build") for _, t in st[2])
    check("/out/usr/local/bin/tollgate" in build_text, "the build stage does not install /usr/local/bin/tollgate")
    cmd = re.findall(r'"([^"]*)"', " ".join(get("CMD")))
    usage = subprocess.run([a.tollgate, "--help"], capture_output=True, text=True).stderr
    check(cmd and re.search(rf"^\s+tollgate {re.escape(cmd[0])}\b", usage, re.M), f"CMD {cmd}: not a tollgate subcommand")
    if "--config" in cmd:
        conf = cmd[cmd.index("--config") + 1]
        check(f"/out{conf}" in build_text, f"CMD names {conf}, which the build stage does not install")

    # The config the image ships, checked by the real binary with the image's env; the models
    # volume (/models in the image) is the repository's model folder here.
    model_dirs = [os.environ.get("TOLLGATE_MODEL_DIR", ""), os.path.join(repo, "models"),
                  os.path.join(repo, "..", "shared", "models")]
    model_dir = next((d for d in model_dirs if d and os.path.isfile(os.path.join(d, "stories260K.gguf"))), None)
    check(model_dir is not None, f"stories260K.gguf not found in {model_dirs} (see README: the model)")
    r = subprocess.run([a.tollgate, "check-config", "--config", os.path.join(repo, "config", "tollgate.yaml")],
                       capture_output=True, text=True, timeout=60,
                       env={"PATH": os.environ.get("PATH", ""), **env, "TOLLGATE_MODEL_DIR": model_dir or "/models"})
    check(r.returncode == 0 and r.stdout.startswith("config OK"),
          f"the image's config/tollgate.yaml with its ENV does not load: rc {r.returncode}: {r.stderr.strip()[:500]}")

    finish("deploy_dockerfile")


if __name__ == "__main__":
    main()
