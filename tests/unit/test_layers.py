"""The package's layers, pinned: what each folder may import (see spawner/__init__.py)."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "spawner"

# folder -> the stackhub folders it may import from (besides itself)
ALLOWED = {
    "core": set(),
    "state": {"core"},
    "backends": {"core"},
    "courses": {"core"},
    "hub": {"core", "state", "backends"},
    "services": {"core", "state", "backends", "courses", "hub"},
    "deploy": {"core", "hub"},
    "build": {"core"},
    "cli": {"core", "deploy", "build", "hub", "courses"},
}


def imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            yield "." * node.level + (node.module or ""), [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def modules():
    return sorted(p for p in PKG.rglob("*.py"))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_each_folder_imports_only_the_layers_below_it(path):
    rel = path.relative_to(PKG)
    layer = rel.parts[0] if len(rel.parts) > 1 else None
    for module, _ in imports(path):
        assert not module.startswith("."), f"{rel}: relative import {module}; use spawner.<layer>...."
        if not module.startswith("spawner.") or layer is None:
            continue
        target = module.split(".")[1]
        if target == layer:
            continue
        assert target in ALLOWED[layer], f"{rel} ({layer}/) imports {module}: {layer}/ may use {sorted(ALLOWED[layer]) or 'nothing'} only"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_no_module_imports_another_modules_private_names(path):
    rel = path.relative_to(PKG)
    for module, names in imports(path):
        if module.startswith("spawner."):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{rel} imports private {private} from {module}"


def test_core_is_pure_no_engine_network_or_process_libraries():
    banned = {"docker", "kubernetes", "subprocess", "socket", "urllib.request", "requests", "tornado.httpclient"}
    for path in (PKG / "core").rglob("*.py"):
        for module, _ in imports(path):
            assert module not in banned and module.split(".")[0] not in {"docker", "kubernetes", "requests"}, \
                f"{path.relative_to(PKG)} imports {module}: core/ does no I/O"


def test_the_hub_image_leaves_out_exactly_the_host_only_folders():
    from spawner.build.images import HOST_ONLY, REPO

    ignored = {line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {f"spawner/{d}" for d in HOST_ONLY} <= ignored
    # and nothing the hub runs imports them
    for layer in ("core", "backends", "hub", "services", "courses"):
        for path in (PKG / layer).rglob("*.py"):
            for module, _ in imports(path):
                assert module.split(".")[:2] not in [["spawner", d] for d in HOST_ONLY], f"{path} imports {module}"


ENGINE_SDKS = {"docker", "kubernetes", "kubernetes_asyncio"}


@pytest.mark.parametrize("layer", ["services", "hub", "courses"])
def test_services_get_the_engine_from_the_backend_and_never_import_an_engine_sdk(layer):
    """Sessions, courses and diskwatch run on every backend: exec, catalog and volume sizes come
    from ``spawner.backends.engine_for(cfg)``; only backends/ (and host-only tools) speak to engines."""
    for path in (PKG / layer).rglob("*.py"):
        for module, _ in imports(path):
            assert module.split(".")[0] not in ENGINE_SDKS, \
                f"{path.relative_to(PKG)} imports {module}: ask spawner.backends.engine_for(cfg) instead"


def test_every_backend_has_the_same_parts():
    """A backend is a folder with a pure objects.py, its spawner and the services' engine."""
    for backend in (p for p in (PKG / "backends").iterdir() if p.is_dir() and p.name != "__pycache__"):
        have = {p.name for p in backend.glob("*.py")}
        assert {"objects.py", "spawner.py", "engine.py"} <= have, f"backends/{backend.name} has only {sorted(have)}"
        text = (backend / "engine.py").read_text()
        assert "def make_engine(" in text, f"backends/{backend.name}/engine.py lacks make_engine(cfg)"


def test_only_the_hubs_config_file_applies_the_config():
    """hub/apply.py configures JupyterHub and nothing else: ports, service and group names live in
    core/names.py, the state folder's paths in state/, so no other part needs it."""
    users = [p.relative_to(PKG) for p in modules() if p.parts[-2] != "hub"
             for module, _ in imports(p) if module == "spawner.hub.apply"]
    assert users == []
    src = PKG.parent / "jupyterhub_config.py"
    assert "spawner.hub.apply" in {m for m, _ in imports(src)}
