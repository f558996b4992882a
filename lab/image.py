"""The local test image: a busybox-static root filesystem imported with `docker import` (no registry needed)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import docker
import docker.errors

BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static
REPOSITORY = "overlay-test"
APPLETS = (
    "sh",
    "httpd",
    "nc",
    "sleep",
    "ip",
    "ifconfig",
    "cat",
    "echo",
    "wget",
    "ps",
    "ping",
    "ping6",
    "true",
    "false",
    "ls",
    "kill",
    "hostname",
    "env",
    "rm",
    "touch",
    "test",
    "mkdir",
    "dd",
    "head",
)
INDEX = b"overlay-test\n"


def _rootfs() -> tuple[bytes, str]:
    data = BUSYBOX.read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add(
            name: str, *, body: bytes | None = None, mode: int = 0o644, kind: bytes = tarfile.REGTYPE, link: str = ""
        ) -> None:
            info = tarfile.TarInfo(name)
            info.mode, info.type, info.linkname, info.mtime = mode, kind, link, 0
            if body is not None:
                info.size = len(body)
            tar.addfile(info, io.BytesIO(body) if body is not None else None)

        for d in ("bin", "www", "tmp", "etc", "proc", "sys", "dev"):
            add(d, mode=0o1777 if d == "tmp" else 0o755, kind=tarfile.DIRTYPE)
        add("bin/busybox", body=data, mode=0o755)
        for applet in APPLETS:
            add(f"bin/{applet}", kind=tarfile.SYMTYPE, link="busybox")
        add("www/index.html", body=INDEX)
        add("etc/passwd", body=b"root:x:0:0:root:/:/bin/sh\n")
        add("etc/group", body=b"root:x:0:\n")
    tarball = buf.getvalue()
    return tarball, hashlib.sha256(tarball).hexdigest()[:12]


def ensure(client: docker.DockerClient) -> str:
    """Import the image unless this exact rootfs is there already; return its reference."""
    tarball, digest = _rootfs()
    ref = f"{REPOSITORY}:{digest}"
    try:
        client.images.get(ref)
        return ref
    except docker.errors.ImageNotFound:
        pass
    client.api.import_image_from_data(
        tarball, repository=REPOSITORY, tag=digest, changes=['CMD ["/bin/sh"]', "WORKDIR /"]
    )
    client.images.get(ref)  # raises if the import did not produce it
    return ref


HTTPD = ["httpd", "-f", "-p", "80", "-h", "/www"]  # serves INDEX on port 80 (IPv4 and IPv6)
