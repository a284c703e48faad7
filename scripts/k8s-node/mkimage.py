#!/usr/bin/env python3
"""Pack one static binary into a one-layer image tarball (docker-archive format) that
`ctr images import` takes. Used for the node's pause image: no registry is reachable here.

    mkimage.py BINARY NAME:TAG OUT.tar
The binary lands at /<basename> and is the image's entrypoint. The output is reproducible
(fixed mtimes, owner root), so the image id only changes when the binary does."""
import hashlib
import io
import json
import os
import sys
import tarfile


def tar_bytes(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data, mode in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime, info.uid, info.gid = len(data), mode, 0, 0, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def main(binary, ref, out):
    name = os.path.basename(binary)
    with open(binary, "rb") as f:
        layer = tar_bytes([(name, f.read(), 0o755)])
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Entrypoint": ["/" + name], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "stackhub mkimage.py"}],
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [ref], "Layers": ["layer.tar"]}]).encode()
    archive = tar_bytes([(config_name, config, 0o644), ("layer.tar", layer, 0o644),
                         ("manifest.json", manifest, 0o644)])
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(archive)
    os.replace(tmp, out)
    print("sha256:" + config_name[:-5])


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
