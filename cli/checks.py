"""Options checked before anything heavy: a mistyped option is answered in milliseconds.

Importing torch and loading a model cost seconds, and an attack minutes; an
option that was wrong all along must not wait for them. Every command calls
these first, then imports what it computes with. Nothing here imports torch
(tests/test_cli_first_hour.py checks that, and bench/cli_latency.py times it).
Each check raises an :class:`~photoimmune.sdk.errors.InputError` (exit status 2)
naming the option and what it accepts.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterable
from pathlib import Path

from photoimmune.sdk.attacks.budget import format_budget, parse_budget
from photoimmune.sdk.attacks.sizing import check_photo_size

# The choices of --method and --recipe, re-exported for the commands: the SDK's own
# tuples (sdk.descriptor imports no torch).
from photoimmune.sdk.descriptor import IMMUNIZE_METHODS as IMMUNIZE_METHODS
from photoimmune.sdk.descriptor import METHODS as METHODS
from photoimmune.sdk.descriptor import RECIPES as RECIPES
from photoimmune.sdk.errors import InputError, PhotoimmuneError
from photoimmune.sdk.io import check_input_file, check_output_dir, check_output_path
from photoimmune.sdk.limits import check_edit_steps
from photoimmune.sdk.models.bundled import bundled_models, resolve_model
from photoimmune.sdk.refs import check_model_name


def budget(value: str, option: str = "--eps") -> str:
    """An L∞ budget such as ``8/255`` or ``0.03``, in its canonical text form."""
    return format_budget(parse_budget(value, name=option))


def edits(size: int, strength: float, edit_steps: int, *, img2img: bool = True) -> None:
    """The photo size and the edit's steps of ``eval`` and ``demo``, refused at once (their
    checks are torch-free), naming the options."""
    if size % 8:
        raise InputError(f"--size {size}: use a multiple of 8 (the model's latent grid)")
    check_photo_size(size, name="--size")
    if not img2img:
        return
    try:
        check_edit_steps(strength, edit_steps)
    except InputError as err:
        raise InputError(f"--strength/--edit-steps: {err}") from None


def one_of(value: str, allowed: Iterable[str], option: str) -> str:
    choices = tuple(allowed)
    if value not in choices:
        raise InputError(f"{option} {value!r}: choose one of {', '.join(choices)}")
    return value


def models(values: Iterable[str], option: str = "--model") -> list[str]:
    """Each a bundled name or a local diffusers folder (resolving one reads no weights)."""
    names = list(values)
    for name in names:
        try:
            resolve_model(name)
        except InputError as err:  # its message names the bundled models and what to do
            raise InputError(f"{option}: {err}") from None
    return names


def bundled_model(value: str, option: str = "--model") -> str:
    """A model that ships with photoimmune (the demo runs on nothing else)."""
    return one_of(value, [m.name for m in bundled_models()], option)


def subscriptions(values: Iterable[str], option: str = "--models") -> list[str]:
    """``vendor/model`` names, comma-separated or repeated; a version is never subscribed to
    (:func:`~photoimmune.sdk.jobs.planning.subscribed_models`)."""
    # Imported here: the catalog it sits beside loads SQLAlchemy, which other commands skip.
    from photoimmune.sdk.jobs.planning import subscribed_models

    try:
        return list(subscribed_models([name for value in values for name in value.split(",")]))
    except InputError as err:  # its message names the model and what to write; add the option
        raise InputError(f"{option}: {err}") from None


def output_folder(path: Path, option: str = "--out") -> Path:
    """A folder to write into: missing is fine (it is created), a file is not, nor one
    this user may not write (or create) files in (:func:`~photoimmune.sdk.io.check_output_dir`)."""
    return check_output_dir(path, option=option)


def new_folder(path: Path, option: str) -> Path:
    """A folder the command creates itself: it must not exist yet."""
    if path.exists():
        kind = "folder" if path.is_dir() else "file"
        raise InputError(f"{option} {path}: a {kind} of that name exists; choose a new folder")
    check_output_dir(path, option=option)
    return path


def output_file(path: Path, option: str, *, overwrite: bool) -> Path:
    """A file the command writes at the end: refuse it now if it could not be written then."""
    try:
        return check_output_path(path, overwrite=overwrite)
    except InputError as err:
        raise InputError(f"{option}: {err}") from None


def input_files(paths: Iterable[Path], option: str = "") -> list[Path]:
    """Files that must exist now (keys, certificates, weights), not only once compute is over:
    regular files, each refused by name otherwise (:func:`~photoimmune.sdk.io.check_input_file`)."""
    return [check_input_file(path, option=option or None) for path in paths]


def signer_files(key: Path | None, cert: Path | None) -> None:
    """``--key`` and ``--cert``, when given, as :func:`input_files`, each refused under its
    own option's name."""
    for path, option in ((key, "--key"), (cert, "--cert")):
        if path is not None:
            input_files([path], option)


def weights(value: str) -> tuple[str, str]:
    """``--weights vendor/model=FOLDER`` (FOLDER: a diffusers folder or a bundled name)."""
    model, sep, folder = value.partition("=")
    if not sep or not folder:
        raise InputError(f"--weights {value!r}: expected vendor/model=FOLDER")
    try:
        check_model_name(model)
    except InputError as err:
        raise InputError(f"--weights: {err}") from None
    models([folder], "--weights")
    return model, folder


def urls(values: Iterable[str], option: str) -> list[str]:
    """http(s) URLs that can name a server (:func:`~photoimmune.sdk.urls.url_problem`),
    such as ``http://127.0.0.1:8480``."""
    from photoimmune.sdk.urls import url_problem

    found = list(values)
    for value in found:
        if (problem := url_problem(value)) is not None:
            raise InputError(
                f"{option} {value!r}: {problem}; give an http(s) URL, e.g. http://127.0.0.1:8480"
            )
    return found


def registry(location: str, root: Path | None) -> bytes | None:
    """``--registry`` (a folder, or a well-formed server URL) and ``--root`` (a registry's
    root.json, when given), checked before keys are made or models load.

    Returns ``--root``'s checked bytes (``None`` without it) to connect with: the file
    is read and parsed once, here.
    """
    from photoimmune.registry.keys import trusted_root_bytes

    if location.startswith(("http://", "https://")):
        urls([location], "--registry")
    return trusted_root_bytes(root) if root is not None else None


def trust_files(paths: Iterable[Path], option: str = "--trust") -> list[bytes]:
    """PEM CA certificate files, read (:func:`~photoimmune.sdk.keys.read_trust_anchors`,
    which refuses a file of anything else) into the trust anchors to verify with."""
    from photoimmune.sdk.keys import SigningKeyError, read_trust_anchors

    found = input_files(paths, option)
    try:
        return read_trust_anchors(found) or []
    except SigningKeyError as err:  # it names the file and what to pass; add the option
        raise InputError(f"{option} {err}") from None


def listen_address(host: str, port: int) -> None:
    """Refuse ``--host``/``--port`` where a server could not listen, as one line before it
    starts: uvicorn would find out only once started, log it among its start-up lines and
    exit 3. Binds as uvicorn does (asyncio's ``create_server``: every address ``host``
    resolves to, ``SO_REUSEADDR``, IPv6 sockets IPv6-only), then lets go at once.

    A host that names no address of this machine is bad input (exit 2); a busy port is
    not (exit 1: what listens there may stop). For every ``serve`` command.
    """
    try:
        found = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as err:
        raise InputError(
            f"--host {host}: not an address, nor a name this machine resolves ({err.strerror}); "
            "give an interface's address, e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (all)"
        ) from None
    with contextlib.ExitStack() as held:  # all at once, as the server will hold them
        for family, kind, proto, _, address in set(found):
            try:
                sock = held.enter_context(socket.socket(family, kind, proto))
            except OSError:
                continue  # a family this machine lacks (IPv6 turned off): so does asyncio
            if os.name == "posix":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as err:
                raise _listen_error(host, port, err) from None


def _listen_error(host: str, port: int, err: OSError) -> PhotoimmuneError:
    """What binding ``host:port`` failing with ``err`` means, naming the option to change."""
    if err.errno == errno.EADDRINUSE:
        return PhotoimmuneError(
            f"--port {port}: already in use on {host}; stop what listens there, or choose "
            "another --port"
        )
    if err.errno == errno.EADDRNOTAVAIL:
        return InputError(
            f"--host {host}: not an address of this machine; give one of its interfaces, e.g. "
            "127.0.0.1 (this machine only) or 0.0.0.0 (all)"
        )
    if err.errno == errno.EACCES:
        return InputError(
            f"--port {port}: this user may not listen on it (ports below 1024 need "
            "privileges); choose another --port"
        )
    return PhotoimmuneError(
        f"--host {host} --port {port}: cannot listen there ({err.strerror or err}); choose "
        "another --host or --port"
    )
