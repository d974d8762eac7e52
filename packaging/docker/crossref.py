"""Cross-references of the container packaging, checked offline (no Docker engine).

What compose.yaml, the Dockerfiles, their .dockerignore files, dashd.toml, init-secrets and
bridge-healthcheck.mjs name must exist and agree with each other and with the repository:
config.example.toml, dashd's and dashctl's sources, the bridges' sources. Run by ./check
with the tools' virtual environment (PyYAML comes with yamllint). Prints one line per
check ("ok" or "FAIL" and why) and exits 1 when any failed.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import tomllib
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
COMPOSE = HERE / "compose.yaml"

# Images built from this repository, by the Dockerfile that builds them.
OWN_IMAGES = {"dashoffice/dashd": "Dockerfile", "dashoffice/bridges": "Dockerfile.bridges"}
# Variables the bridge image sets that are not the bridges' own configuration.
BRIDGE_RUNTIME_VARS = {"NODE_ENV", "PUPPETEER_SKIP_DOWNLOAD", "HOME"}

results: list[tuple[bool, str, str]] = []


def check(description: str, problems: list[str] | str | None = None) -> None:
    """Records one check: passed when `problems` is empty."""
    if isinstance(problems, str):
        problems = [problems]
    problems = [p for p in (problems or []) if p]
    results.append((not problems, description, "; ".join(problems)))


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# --- Dockerfiles -------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: continuation lines joined, comments and heredoc
    bodies skipped."""
    lines = read(path).splitlines()
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        while line.endswith("\\") and i < len(lines):
            nxt = lines[i].strip()
            i += 1
            if nxt.startswith("#"):
                continue
            line = line[:-1].rstrip() + " " + nxt
        word, _, args = line.partition(" ")
        heredoc = re.search(r"<<-?'?\"?([A-Za-z_]+)", args)
        if heredoc and word.upper() in {"COPY", "RUN"}:
            delimiter = heredoc.group(1)
            while i < len(lines) and lines[i].strip() != delimiter:
                i += 1
            i += 1
        out.append((word.upper(), args.strip()))
    return out


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last:]


def env_of(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in instructions:
        if word == "ENV":
            for pair in args.split():
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def json_args(args: str) -> list[str] | None:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) else None


# --- .dockerignore, as Docker's pattern matcher reads it ---------------------------------


def ignore_patterns(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, regex) per pattern, in order."""
    patterns = []
    for raw in read(path).splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line[1:].strip() if exception else line).lstrip("/")
        regex, j = "", 0
        while j < len(pattern):
            c = pattern[j]
            if c == "*" and pattern[j + 1 : j + 2] == "*":
                j += 1
                if pattern[j + 1 : j + 2] == "/":
                    j += 1
                regex += ".*" if j + 1 >= len(pattern) else "(.*/)?"
            elif c == "*":
                regex += "[^/]*"
            elif c == "?":
                regex += "[^/]"
            else:
                regex += re.escape(c)
            j += 1
        patterns.append((exception, re.compile(f"^{regex}$")))
    return patterns


def ignored(patterns: list[tuple[bool, re.Pattern[str]]], relpath: str) -> bool:
    """Whether the build context leaves `relpath` out (moby's MatchesOrParentMatches)."""
    parents = relpath.split("/")[:-1]
    matched = False
    for exception, regex in patterns:
        if exception != matched:
            continue
        hit = bool(regex.match(relpath)) or any(
            regex.match("/".join(parents[: k + 1])) for k in range(len(parents))
        )
        if hit:
            matched = not exception
    return matched


def tracked_files(relpath: str) -> list[str]:
    """Files git tracks under `relpath`, else the files on disk (no git)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "--", relpath],
            capture_output=True, text=True, check=True,
        ).stdout.split()
        if out:
            return out
    except (OSError, subprocess.CalledProcessError):
        pass
    base = ROOT / relpath
    if base.is_file():
        return [relpath]
    return [
        str(p.relative_to(ROOT)) for p in base.rglob("*")
        if p.is_file() and "node_modules" not in p.parts and "target" not in p.parts
    ]


def check_build_context(dockerfile: Path) -> None:
    """Every COPY source exists and reaches the builder through the .dockerignore."""
    ignore_file = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if not ignore_file.is_file():
        check(f"{dockerfile.name}: {ignore_file.name} beside it", f"{ignore_file.name} is missing")
        return
    patterns = ignore_patterns(ignore_file)
    missing, left_out, sources = [], [], 0
    for word, args in dockerfile_instructions(dockerfile):
        if word != "COPY" or "--from=" in args or "<<" in args:
            continue
        parts = [p for p in args.split() if not p.startswith("--")]
        for source in parts[:-1]:
            sources += 1
            if not (ROOT / source).exists():
                missing.append(source)
                continue
            left_out += [f for f in tracked_files(source) if ignored(patterns, f)]
    check(
        f"{dockerfile.name}: its {sources} COPY sources exist in the build context (the repository root)",
        [f"missing: {', '.join(missing)}"] if missing else [],
    )
    check(
        f"{dockerfile.name}: {ignore_file.name} sends every file those COPYs read",
        [f"left out: {', '.join(left_out[:5])}"] if left_out else [],
    )
    for heavy in ["target/release/dashd", ".git/HEAD", "dashd-data/dashd.db", "bridges/common/node_modules/x"]:
        if not ignored(patterns, heavy):
            check(f"{dockerfile.name}: {ignore_file.name} leaves out {heavy.split('/')[0]}/", f"{heavy} is sent")
            break
    else:
        check(f"{dockerfile.name}: {ignore_file.name} leaves out target/, .git/, dashd-data/, node_modules/")


# --- config.example.toml and dashd's sources ---------------------------------------------


def example_keys() -> dict[str, set[str]]:
    """Keys of config.example.toml by section ("" for top level), commented-out ones too."""
    sections: dict[str, set[str]] = {"": set()}
    current = ""
    for line in read(ROOT / "config.example.toml").splitlines():
        header = re.match(r"^\[([a-z_]+)\]\s*$", line)
        if header:
            current = header.group(1)
            sections.setdefault(current, set())
            continue
        key = re.match(r"^#?\s*([a-z_][a-z0-9_]*)\s*=", line)
        if key:
            sections[current].add(key.group(1))
    return sections


def rust_string_list(path: Path, const: str) -> set[str]:
    found = re.search(rf"{const}:\s*&\[&str\]\s*=\s*&\[([^\]]*)\]", read(path))
    return set(re.findall(r'"([^"]+)"', found.group(1))) if found else set()


def dashd_key(var: str, sections: dict[str, set[str]]) -> tuple[str, str] | None:
    """DASHD_SECTION_KEY -> (section, key) as dashd maps it (config.rs env_key_path)."""
    rest = var[len("DASHD_"):].lower()
    for section in sections:
        if section and rest.startswith(section + "_"):
            return section, rest[len(section) + 1:]
    return "", rest


def check_dashd_variables(variables: dict[str, set[str]]) -> None:
    """Each DASHD_* variable names a key of config.example.toml; *_file keys are secrets."""
    sections = example_keys()
    secret_keys = rust_string_list(ROOT / "crates/core/src/config.rs", "SECRET_KEYS")
    not_config = rust_string_list(ROOT / "crates/dashd/src/config.rs", "NOT_CONFIG_VARS")
    core = read(ROOT / "crates/core/src/config.rs")
    problems, mapped = [], []
    for var, where in sorted(variables.items()):
        if var in not_config:
            mapped.append(f"{var} (not a key)")
            continue
        section, key = dashd_key(var, sections)
        dotted = f"{section}.{key}" if section else key
        if key not in sections.get(section, set()):
            problems.append(f"{var} ({', '.join(sorted(where))}): no key {dotted} in config.example.toml")
            continue
        if key.endswith("_file"):
            base = f"{section}.{key[:-5]}" if section else key[:-5]
            if base not in secret_keys and not re.search(rf"pub {key}: Option<PathBuf>", core):
                problems.append(f"{var}: {dotted} is neither a field nor <secret>_file (SECRET_KEYS {sorted(secret_keys)})")
                continue
        mapped.append(f"{var}={dotted}")
    check(
        "DASHD_* variables map to keys of config.example.toml (and *_FILE to secrets dashd reads from files): "
        + ", ".join(mapped),
        problems,
    )


def dashd_subcommands() -> set[str]:
    main = read(ROOT / "crates/dashd/src/main.rs")
    body = re.search(r"enum Command \{(.*?)\n\}", main, re.S)
    names = re.findall(r"^\s{4}([A-Z][A-Za-z]+)\s*[,{]", body.group(1), re.M) if body else []
    return {re.sub(r"(?<!^)([A-Z])", r"-\1", n).lower() for n in names}


# --- init-secrets ------------------------------------------------------------------------


def init_secrets_plan() -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """({secret: (owner var, mode)}, {owner var: "uid:gid"}) as init-secrets declares them."""
    text = read(HERE / "init-secrets")
    owners = dict(re.findall(r"^readonly ([A-Z_]+)=(\d+:\d+)", text, re.M))
    secrets = {
        name: (owner, mode)
        for name, owner, mode in re.findall(r'^secret (\w+) "\$(\w+)" (0\d{3}) ', text, re.M)
    }
    return secrets, owners


def run_init_secrets(compose: dict) -> None:
    """Runs init-secrets into a scratch directory and checks what dashd and the images read."""
    if os.geteuid() != 0:
        check("init-secrets run in a scratch directory (skipped: needs root for chown)")
        return
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "secrets"
        first = subprocess.run([str(HERE / "init-secrets"), "--dir", str(target)], capture_output=True, text=True)
        if first.returncode != 0:
            check("init-secrets creates the secrets", first.stderr.strip())
            return
        files = {p.name: p for p in target.iterdir()}
        declared = {name for name in compose.get("secrets", {})}
        check(
            f"init-secrets creates exactly the {len(declared)} secrets compose.yaml declares",
            [f"missing {sorted(declared - set(files))}" if declared - set(files) else "",
             f"extra {sorted(set(files) - declared)}" if set(files) - declared else ""],
        )
        value = {name: path.read_text().rstrip("\n") for name, path in files.items()}
        problems = []
        if not re.fullmatch(r"[0-9a-f]{64}", value.get("master_key", "")):
            problems.append("master_key is not 64 hex digits (secrets.rs: MasterKey::parse)")
        if len(value.get("jwt_secret", "").encode()) < 32:
            problems.append("jwt_secret is shorter than 32 bytes (api.jwt_secret)")
        for name in ("bridge_baileys_token", "bridge_venom_token", "bridge_wwebjs_token"):
            if len(value.get(name, "")) < 16:
                problems.append(f"{name} is shorter than the 16 characters a bridge asks for")
        pg = compose["services"]["postgres"]["environment"]
        url = re.fullmatch(r"postgres://([^:]+):([^@]+)@([^:/]+):(\d+)/(\w+)", value.get("database_url", ""))
        if not url:
            problems.append("database_url is not postgres://USER:PASSWORD@HOST:PORT/DB")
        elif url.groups() != (pg["POSTGRES_USER"], value.get("postgres_password"), "postgres", "5432", pg["POSTGRES_DB"]):
            problems.append("database_url does not name compose's postgres service, user, database and password")
        secrets_plan, owners = init_secrets_plan()
        for name, path in files.items():
            st = path.stat()
            owner_var, mode = secrets_plan.get(name, ("?", "?"))
            if f"{st.st_uid}:{st.st_gid}" != owners.get(owner_var) or oct(st.st_mode & 0o777) != oct(int(mode, 8)):
                problems.append(f"{name}: {st.st_uid}:{st.st_gid} {oct(st.st_mode & 0o777)}")
        if target.stat().st_mode & 0o077:
            problems.append("the directory is open to other users")
        check("init-secrets: formats dashd and the images read (hex master key, 32-byte JWT key, "
              "database URL matching compose's postgres), owners and modes, a 0700 directory", problems)
        before = {name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in files.items()}
        again = subprocess.run([str(HERE / "init-secrets"), "--dir", str(target)], capture_output=True, text=True)
        after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in target.iterdir()}
        check("init-secrets run again keeps every existing secret",
              [again.stderr.strip()] if again.returncode else ([] if before == after else ["a secret changed"]))


# --- compose.yaml ------------------------------------------------------------------------


def image_kind(service: dict) -> str | None:
    """"dashoffice/dashd" or "dashoffice/bridges" for the images built here."""
    image = service.get("image", "")
    default = re.sub(r"^\$\{[A-Z_]+:-(.*)\}$", r"\1", image)
    name = default.rsplit(":", 1)[0]
    return name if name in OWN_IMAGES else None


def image_user(kind: str) -> str:
    users = [args for word, args in final_stage(dockerfile_instructions(HERE / OWN_IMAGES[kind])) if word == "USER"]
    return users[-1] if users else "0"


def service_uid_gid(service: dict) -> tuple[int, int] | None:
    user = str(service.get("user") or (image_user(image_kind(service)) if image_kind(service) else ""))
    found = re.fullmatch(r"(\d+):(\d+)", user)
    return (int(found.group(1)), int(found.group(2))) if found else None


def check_compose(compose: dict) -> None:
    services: dict[str, dict] = compose["services"]
    declared_secrets = compose.get("secrets", {})
    declared_volumes = set(compose.get("volumes", {}))
    declared_networks = compose.get("networks", {})

    # Health checks and restart policies.
    problems = []
    one_shots = {name for name, s in services.items() if str(s.get("restart")) == "no"}
    for name, s in services.items():
        health = s.get("healthcheck", {})
        if health.get("disable"):
            if name not in one_shots:
                problems.append(f"{name}: health check disabled on a long-running service")
        elif not health.get("test") or health["test"] in (["NONE"], "NONE"):
            problems.append(f"{name}: no health check")
        if name not in one_shots and s.get("restart") not in ("unless-stopped", "always"):
            problems.append(f"{name}: restart {s.get('restart')!r}")
    check("every service has a health check (one-shot jobs: disabled, restart \"no\") and a restart policy", problems)

    # depends_on.
    problems = []
    for name, s in services.items():
        deps = s.get("depends_on", {})
        if isinstance(deps, list):
            problems.append(f"{name}: depends_on without conditions")
            continue
        for dep, how in deps.items():
            condition = how.get("condition")
            if dep not in services:
                problems.append(f"{name} -> {dep}: no such service")
            elif condition == "service_healthy":
                if services[dep].get("healthcheck", {}).get("disable") or not services[dep].get("healthcheck", {}).get("test"):
                    problems.append(f"{name} -> {dep}: waits for a health check {dep} does not have")
            elif condition == "service_completed_successfully":
                if dep not in one_shots:
                    problems.append(f"{name} -> {dep}: waits for the end of a long-running service")
            else:
                problems.append(f"{name} -> {dep}: condition {condition!r}")
            if services.get(dep, {}).get("profiles") and not s.get("profiles"):
                problems.append(f"{name} -> {dep}: depends on a service of profile {services[dep]['profiles']}")
    check("depends_on: service_healthy on services with a health check, service_completed_successfully "
          "on one-shot jobs, none on a profiled service", problems)
    dashd_deps = services["dashd"].get("depends_on", {})
    check("dashd waits for postgres (healthy) and migrate (completed); migrate runs `dashd migrate`",
          [] if dashd_deps.get("postgres", {}).get("condition") == "service_healthy"
          and dashd_deps.get("migrate", {}).get("condition") == "service_completed_successfully"
          and services["migrate"].get("command") == ["dashd", "migrate"]
          and services["migrate"].get("depends_on", {}).get("postgres", {}).get("condition") == "service_healthy"
          else ["dashd/migrate dependencies or command differ"])
    commands = dashd_subcommands()
    check(f"dashd has the subcommands the images run (main.rs: {', '.join(sorted(commands))})",
          [c for c in ("run", "migrate") if c not in commands])

    # Ports: only dashd, on loopback.
    problems = []
    for name, s in services.items():
        for port in s.get("ports", []):
            if name != "dashd":
                problems.append(f"{name} publishes {port}")
            elif not isinstance(port, dict) or port.get("host_ip") != "127.0.0.1":
                problems.append(f"dashd publishes {port} beyond 127.0.0.1")
    check("only dashd publishes a port, on 127.0.0.1", problems)

    # Secrets.
    plan, owners = init_secrets_plan()
    problems = []
    used = {sec if isinstance(sec, str) else sec["source"] for s in services.values() for sec in s.get("secrets", [])}
    for name, spec in declared_secrets.items():
        if spec.get("file") != f"./secrets/{name}":
            problems.append(f"{name}: file {spec.get('file')} is not ./secrets/{name}")
        if name not in plan:
            problems.append(f"{name}: init-secrets does not make it")
    problems += [f"{name}: declared, used by no service" for name in set(declared_secrets) - used]
    problems += [f"{name}: used, not declared" for name in used - set(declared_secrets)]
    problems += [f"init-secrets makes {name}, compose does not mount it" for name in set(plan) - set(declared_secrets)]
    for name, s in services.items():
        mine = {sec if isinstance(sec, str) else sec["source"] for sec in s.get("secrets", [])}
        for var, value in (s.get("environment") or {}).items():
            if var.endswith("_FILE") and str(value).startswith("/run/secrets/"):
                if str(value).removeprefix("/run/secrets/") not in mine:
                    problems.append(f"{name}: {var}={value} is not among its secrets")
    check("secrets: each file is ./secrets/<name> made by init-secrets, each is mounted, "
          "each *_FILE variable names a secret of its service", problems)

    # Readability of each mounted secret by the service's uid/gid (compose keeps the host's
    # owner and mode).
    problems = []
    for name, s in services.items():
        ids = service_uid_gid(s)
        for sec in s.get("secrets", []):
            sec = sec if isinstance(sec, str) else sec["source"]
            owner_var, mode = plan.get(sec, ("", "0"))
            uid, gid = (int(x) for x in owners.get(owner_var, "-1:-1").split(":"))
            readable = ids is not None and (
                (ids[0] == uid and int(mode, 8) & 0o400) or (ids[1] == gid and int(mode, 8) & 0o040)
            )
            if not readable:
                problems.append(f"{name} (uid:gid {ids}) cannot read {sec} ({uid}:{gid} {mode})")
    check("every secret is readable by the uid/gid its service runs as (init-secrets owners vs images' USER "
          "and compose's user)", problems)

    # Users: nobody runs as root.
    problems = []
    for name, s in services.items():
        ids = service_uid_gid(s)
        if ids is None or ids[0] == 0:
            problems.append(f"{name}: runs as {s.get('user') or 'the image user'}")
    check("no service runs as root (images built here: USER; postgres, redis, mongo: their uid 999)", problems)

    # Hardening.
    problems = []
    for name, s in services.items():
        if "ALL" not in s.get("cap_drop", []):
            problems.append(f"{name}: capabilities kept")
        if "no-new-privileges:true" not in s.get("security_opt", []):
            problems.append(f"{name}: no no-new-privileges")
        if image_kind(s) and not s.get("read_only"):
            problems.append(f"{name}: writable root filesystem")
        if not s.get("logging", {}).get("options", {}).get("max-size"):
            problems.append(f"{name}: logs never rotated")
    check("every service drops all capabilities, sets no-new-privileges and rotates its logs; "
          "images built here run read-only", problems)

    # Volumes and networks.
    problems = []
    used_volumes = set()
    for name, s in services.items():
        for volume in s.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source")
            used_volumes.add(source)
            if source not in declared_volumes:
                problems.append(f"{name}: volume {source} not declared")
    problems += [f"volume {v} declared, unused" for v in declared_volumes - used_volumes]
    for kind, dockerfile in OWN_IMAGES.items():
        volumes = [json_args(a) or [a] for w, a in final_stage(dockerfile_instructions(HERE / dockerfile)) if w == "VOLUME"]
        paths = {p for v in volumes for p in v}
        for name, s in services.items():
            if image_kind(s) == kind:
                for volume in s.get("volumes", []):
                    if volume.split(":")[1] not in paths:
                        problems.append(f"{name}: mounts {volume}, the image's VOLUME is {sorted(paths)}")
    check("named volumes: each used is declared and each declared is used; mounted where the images keep data",
          problems)
    problems = []
    if not declared_networks.get("data", {}).get("internal"):
        problems.append("network data is not internal")
    for name, s in services.items():
        nets = set(s.get("networks", []))
        problems += [f"{name}: network {n} not declared" for n in nets - set(declared_networks)]
        if s.get("image", "").split(":")[0] in ("postgres", "redis", "mongo") and nets != {"data"}:
            problems.append(f"{name}: databases belong on the internal network only")
        if name.startswith("bridge-") and "data" in nets:
            problems.append(f"{name}: a bridge reaches the databases")
    check("the databases sit on the internal network `data` alone; the bridges do not reach it", problems)

    # Images built here: one service builds each, from the right Dockerfile; never pulled.
    problems = []
    for kind, dockerfile in OWN_IMAGES.items():
        users = {name: s for name, s in services.items() if image_kind(s) == kind}
        builders = [name for name, s in users.items() if s.get("build")]
        if len(builders) != 1:
            problems.append(f"{kind}: built by {builders or 'no service'}")
        for name in builders:
            build = users[name]["build"]
            context = (HERE / build["context"]).resolve()
            if context != ROOT:
                problems.append(f"{name}: context {context} is not the repository root")
            if (context / build["dockerfile"]).resolve() != HERE / dockerfile:
                problems.append(f"{name}: builds {build['dockerfile']}, not packaging/docker/{dockerfile}")
        problems += [f"{name}: pull_policy {s.get('pull_policy')}" for name, s in users.items()
                     if s.get("pull_policy") != "never"]
    check("images built here: one service builds each (context: repository root, the right Dockerfile), "
          "none is ever pulled", problems)

    # Configs.
    problems = []
    for name, spec in compose.get("configs", {}).items():
        if not (HERE / spec["file"]).is_file():
            problems.append(f"config {name}: {spec['file']} missing")
    for name, s in services.items():
        for cfg in s.get("configs", []):
            target = cfg["target"] if isinstance(cfg, dict) else f"/{cfg}"
            if (s.get("environment") or {}).get("DASHD_CONFIG") != target:
                problems.append(f"{name}: config mounted at {target}, DASHD_CONFIG elsewhere")
    check("configs: dashd.toml exists and is where DASHD_CONFIG points", problems)

    # dashd.toml keys.
    sections = example_keys()
    site = tomllib.loads(read(HERE / "dashd.toml"))
    problems = []
    for key, value in site.items():
        if isinstance(value, dict):
            problems += [f"{key}.{k}" for k in value if k not in sections.get(key, set())]
        elif key not in sections[""]:
            problems.append(key)
    gateway = declared_networks["edge"]["ipam"]["config"][0]["gateway"]
    if gateway not in site.get("api", {}).get("trusted_proxies", []):
        problems.append(f"api.trusted_proxies does not hold the edge network's gateway {gateway}")
    check("dashd.toml: every key is in config.example.toml; trusted_proxies holds the edge gateway",
          [f"unknown key {p}" if "." in p and " " not in p else p for p in problems])


def check_dashd_image(compose: dict) -> None:
    stage = final_stage(dockerfile_instructions(HERE / "Dockerfile"))
    env = env_of(stage)
    dashd = compose["services"]["dashd"]
    variables: dict[str, set[str]] = {}
    for var in env:
        if var.startswith("DASHD_"):
            variables.setdefault(var, set()).add("Dockerfile")
    for name, s in compose["services"].items():
        if image_kind(s) == "dashoffice/dashd":
            for var in s.get("environment") or {}:
                variables.setdefault(var, set()).add(name)
    check_dashd_variables(variables)

    port = env["DASHD_SERVER_LISTEN"].rsplit(":", 1)[1]
    problems = []
    if dashd["environment"].get("DASHD_SERVER_LISTEN", "").rsplit(":", 1)[-1] != port:
        problems.append("compose's DASHD_SERVER_LISTEN port differs from the image's")
    exposed = [a for w, a in stage if w == "EXPOSE"]
    if exposed != [port]:
        problems.append(f"EXPOSE {exposed}")
    if str(dashd["ports"][0]["target"]) != port:
        problems.append(f"published target {dashd['ports'][0]['target']}")
    health_urls = [a for w, a in stage if w == "HEALTHCHECK"] + [" ".join(dashd["healthcheck"]["test"])]
    for text in health_urls:
        if f"http://127.0.0.1:{port}/health" not in text:
            problems.append(f"a health check does not probe 127.0.0.1:{port}/health")
    routes = subprocess.run(["grep", "-rlF", '"/health"', str(ROOT / "crates/dashd/src")], capture_output=True, text=True)
    if not routes.stdout:
        problems.append("dashd's sources have no /health route")
    check(f"dashd: port {port} is the same in DASHD_SERVER_LISTEN, EXPOSE, the published port and both "
          "health checks, and dashd serves /health", problems)

    problems = []
    socket = env.get("DASHCTL_SOCKET")
    if socket != env["DASHD_DATA_DIR"] + "/dashd.sock":
        problems.append(f"DASHCTL_SOCKET {socket} is not <DASHD_DATA_DIR>/dashd.sock")
    if 'join("dashd.sock")' not in read(ROOT / "crates/core/src/config.rs"):
        problems.append("dashd's default socket is no longer <data_dir>/dashd.sock")
    if "DASHCTL_SOCKET" not in read(ROOT / "crates/dashctl/src/client.rs"):
        problems.append("dashctl does not read DASHCTL_SOCKET")
    if dashd["environment"].get("DASHD_DATA_DIR", env["DASHD_DATA_DIR"]) != env["DASHD_DATA_DIR"]:
        problems.append("compose moves the data directory away from the image's")
    cmd = [json_args(a) for w, a in stage if w == "CMD"]
    if cmd != [["dashd", "run"]]:
        problems.append(f"CMD {cmd}")
    check("dashctl in the image finds dashd's admin socket (DASHCTL_SOCKET = data dir + dashd.sock); CMD dashd run",
          problems)


def check_bridges(compose: dict) -> None:
    config_js = read(ROOT / "bridges/common/src/config.js")
    known = set(re.findall(r"'([A-Z_]+)'", re.search(r"ENV_VARIABLES = Object\.freeze\(\[(.*?)\]\)", config_js, re.S).group(1)))
    healthcheck = read(HERE / "bridge-healthcheck.mjs")
    health_ports = {d: int(p) for d, p in re.findall(r"'([a-z]+-http)': (\d+)", healthcheck)}
    dockerfile = dockerfile_instructions(HERE / "Dockerfile.bridges")
    image_env = env_of(final_stage(dockerfile))
    dashd_port = compose["services"]["dashd"]["environment"]["DASHD_SERVER_LISTEN"].rsplit(":", 1)[1]

    problems = [f"Dockerfile.bridges sets {v}, which no bridge reads" for v in image_env
                if v not in known and v not in BRIDGE_RUNTIME_VARS]
    if image_env.get("BRIDGE_HOST") != "0.0.0.0":
        problems.append("the image's bridges do not listen beyond the container's loopback")
    if image_env.get("PUPPETEER_SKIP_DOWNLOAD") != "true":
        problems.append("PUPPETEER_SKIP_DOWNLOAD is not set")
    check("Dockerfile.bridges: every BRIDGE_*/DASHD_URL/CHROMIUM_PATH variable is one bridges/common reads; "
          "no browser download", problems)

    bridges = sorted(p.parent.parent.name for p in (ROOT / "bridges").glob("*/src/main.js"))
    problems = []
    workdirs = [i for i, (w, a) in enumerate(dockerfile) if w == "WORKDIR"]
    for directory in bridges:
        main = read(ROOT / f"bridges/{directory}/src/main.js")
        library = re.search(r"library: '(\w+)'", main).group(1)
        port = re.search(r"defaults: \{ port: (\d+) \}", main).group(1)
        name = f"bridge-{library}"
        service = compose["services"].get(name)
        if service is None:
            problems.append(f"no service {name} for bridges/{directory}")
            continue
        expected_env = {
            "BRIDGE_PORT": port,
            "BRIDGE_TOKEN_FILE": f"/run/secrets/bridge_{library}_token",
            "BRIDGE_PUBLIC_URL": f"http://{name}:{port}",
            "DASHD_URL": f"http://dashd:{dashd_port}",
        }
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        problems += [f"{name}: {k}={env.get(k)} (expected {v})" for k, v in expected_env.items() if env.get(k) != v]
        problems += [f"{name}: {k} is not a variable the bridges read" for k in env if k not in known]
        if service.get("command") != ["node", f"{directory}/src/main.js"]:
            problems.append(f"{name}: command {service.get('command')}")
        if health_ports.get(directory) != int(port):
            problems.append(f"bridge-healthcheck.mjs: {directory} on {health_ports.get(directory)}, main.js on {port}")
        if service.get("healthcheck", {}).get("test") != ["CMD", "node", "/opt/dashoffice/bridge-healthcheck.mjs"]:
            problems.append(f"{name}: health check is not bridge-healthcheck.mjs")
        installs = [
            a for i in workdirs if dockerfile[i][1] == f"/opt/dashoffice/bridges/{directory}"
            for w, a in dockerfile[i + 1:i + 2] if w == "RUN"
        ]
        if not any("npm ci --omit=dev" in a for a in installs):
            problems.append(f"Dockerfile.bridges: no `npm ci --omit=dev` in {directory}")
        if not any(w == "COPY" and f"bridges/{directory}/src " in a + " " for w, a in dockerfile):
            problems.append(f"Dockerfile.bridges: bridges/{directory}/src not copied")
        for extra in (".npmrc", ".puppeteerrc.cjs"):
            if (ROOT / f"bridges/{directory}/{extra}").exists() and not any(
                w == "COPY" and f"bridges/{directory}/{extra}" in a for w, a in dockerfile
            ):
                problems.append(f"Dockerfile.bridges: bridges/{directory}/{extra} (keeps npm from fetching a browser) not copied")
    check(f"bridges ({', '.join(bridges)}): a service each, with the port of its main.js, its token, its media URL, "
          "dashd's URL, its health check; installed with npm ci --omit=dev, .npmrc and .puppeteerrc.cjs included",
          problems)


def check_redis_command(compose: dict) -> None:
    """The only shell logic in compose.yaml: Redis gets its password on stdin, and its
    health check authenticates. Run with stand-ins for redis-server and redis-cli."""
    redis = compose["services"]["redis"]
    with tempfile.TemporaryDirectory() as scratch:
        bin_dir, secrets = Path(scratch, "bin"), Path(scratch, "secrets")
        bin_dir.mkdir()
        secrets.mkdir()
        (secrets / "redis_password").write_text("pw-1234\n")
        (bin_dir / "redis-server").write_text('#!/bin/sh\necho "args: $*"\ncat\n')
        (bin_dir / "redis-cli").write_text('#!/bin/sh\n[ "$REDISCLI_AUTH" = pw-1234 ] && [ "$1" = ping ] && echo PONG\n')
        for tool in bin_dir.iterdir():
            tool.chmod(0o755)
        env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")

        def shell(script: str) -> subprocess.CompletedProcess[str]:
            script = script.replace("$$", "$").replace("/run/secrets/", f"{secrets}/")
            return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=10)

        command = redis["command"]
        served = shell(command[2]) if command[:2] == ["sh", "-c"] else None
        problems = []
        if served is None or served.stdout != "args: - --appendonly yes\nrequirepass pw-1234\n":
            problems.append(f"redis-server got {served.stdout if served else command!r}")
        if "pw-1234" in " ".join(command):
            problems.append("the password is on the command line")
        test = redis["healthcheck"]["test"]
        if test[0] != "CMD-SHELL" or shell(test[1]).returncode != 0:
            problems.append("the health check does not pass against a server that wants the password")
    check("redis: the password reaches redis-server on stdin, not in its arguments; the health check authenticates "
          "(run with stand-ins)", problems)


class FakeBridge(http.server.BaseHTTPRequestHandler):
    """GET /health of a bridge, as bridges/common/src/server.js answers it."""

    token = "t" * 32
    ok = True

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.headers.get("authorization") != f"Bearer {self.token}":
            status, body = 401, {"error": {"code": "unauthorized", "message": "missing or wrong bearer token"}}
        else:
            status, body = 200, {"ok": self.ok, "library": "baileys", "version": "test", "sessions": {"total": 0}}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def check_bridge_healthcheck() -> None:
    node = shutil.which("node")
    if node is None:
        check("bridge-healthcheck.mjs against a stand-in bridge (skipped: no node)")
        return
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeBridge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    problems = []
    with tempfile.TemporaryDirectory() as scratch:
        token_file = Path(scratch, "token")

        def probe(token: str, ok: bool = True, bridge_port: int = port) -> int:
            FakeBridge.ok = ok
            token_file.write_text(token + "\n")
            env = {"PATH": os.environ["PATH"], "BRIDGE_PORT": str(bridge_port), "BRIDGE_TOKEN_FILE": str(token_file)}
            return subprocess.run([node, str(HERE / "bridge-healthcheck.mjs")], env=env,
                                  capture_output=True, text=True, timeout=20).returncode

        if probe(FakeBridge.token) != 0:
            problems.append("a healthy bridge is reported unhealthy")
        if probe("wrong-token-wrong-token") != 1:
            problems.append("a 401 is not unhealthy")
        if probe(FakeBridge.token, ok=False) != 1:
            problems.append('"ok": false is not unhealthy')
    server.shutdown()
    closed = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeBridge)
    free_port = closed.server_address[1]
    closed.server_close()
    with tempfile.TemporaryDirectory() as scratch:
        token_file = Path(scratch, "token")
        token_file.write_text(FakeBridge.token + "\n")
        env = {"PATH": os.environ["PATH"], "BRIDGE_PORT": str(free_port), "BRIDGE_TOKEN_FILE": str(token_file)}
        if subprocess.run([node, str(HERE / "bridge-healthcheck.mjs")], env=env, capture_output=True, timeout=20).returncode != 1:
            problems.append("a bridge that does not answer is not unhealthy")
    check("bridge-healthcheck.mjs: healthy on 200 ok:true with the token; unhealthy on 401, ok:false, no answer "
          "(against a stand-in on 127.0.0.1)", problems)


def main() -> int:
    compose = yaml.safe_load(read(COMPOSE))
    for dockerfile in ("Dockerfile", "Dockerfile.bridges"):
        check_build_context(HERE / dockerfile)
    for kind, dockerfile in OWN_IMAGES.items():
        user = image_user(kind)
        check(f"{dockerfile}: runs as a fixed non-root uid:gid ({user})",
              [] if re.fullmatch(r"[1-9]\d*:[1-9]\d*", user) else [f"USER {user}"])
    check_compose(compose)
    check_dashd_image(compose)
    check_bridges(compose)
    check_redis_command(compose)
    check_bridge_healthcheck()
    run_init_secrets(compose)
    for passed, description, why in results:
        print(f"{'ok  ' if passed else 'FAIL'}  {description}" + ("" if passed else f"\n      {why}"))
    return 0 if all(passed for passed, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
