"""TLS for the course's local server: a certificate authority and a server certificate of its own,
made once with ``openssl`` into the server's folder (``.mysql/tls/``), and what a client passes to
mysqlclient to use them.

The server starts with ``--ssl-ca``, ``--ssl-cert`` and ``--ssl-key`` (``server_options()``): then
it offers TLS, and a client may use it or not (``require_secure_transport`` is OFF, MariaDB's
default). A client asks for it with ``ssl=`` and checks the server's certificate with ``ssl_mode=``
(``client_options()``): on libmariadb 3.3 a CA given alone encrypts but verifies nothing.
"""
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

DAYS = 3650  # a local server's certificates need not expire while the course is in use
SUBJECT_ALT_NAME = "IP:127.0.0.1"  # what the client connects to: VERIFY_IDENTITY checks the address against it


class TLSError(RuntimeError):
    """The certificates could not be made; the message says what to install or fix."""


@dataclass(frozen=True)
class Files:
    """The PEM files in one folder: the CA's certificate (what a client trusts) and the server's pair."""
    folder: Path

    @property
    def ca(self):
        return self.folder / "ca.pem"

    @property
    def cert(self):
        return self.folder / "server-cert.pem"

    @property
    def key(self):
        return self.folder / "server-key.pem"

    def exist(self):
        return self.ca.exists() and self.cert.exists() and self.key.exists()


def _openssl(*arguments, cwd):
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TLSError("openssl is not installed: install it (Debian: `apt-get install openssl`; macOS has it) "
                       "to give the local server TLS")
    done = subprocess.run([openssl, *arguments], cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise TLSError(f"openssl {arguments[0]} failed: {done.stderr.strip()}")


def make_authority(folder, name="simplerr course CA"):
    """A self-signed certificate authority in ``folder`` (``ca.pem``, ``ca-key.pem``)."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(DAYS), "-subj", f"/CN={name}",
             "-keyout", "ca-key.pem", "-out", "ca.pem", cwd=folder)


def make_certificates(folder):
    """The CA and a server certificate for 127.0.0.1 signed by it, in ``folder``; ``Files``.

    Idempotent: files already there are kept (a new CA would leave every client's copy stale).
    They are made aside and moved in place, so a failure leaves nothing half-made.
    """
    files = Files(Path(folder))
    if files.exist():
        return files
    files.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=files.folder) as aside:
        make_authority(aside)
        Path(aside, "san.ext").write_text(f"subjectAltName={SUBJECT_ALT_NAME}\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                 "-keyout", "server-key.pem", "-out", "server.csr", cwd=aside)
        _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
                 "-days", str(DAYS), "-extfile", "san.ext", "-out", "server-cert.pem", cwd=aside)
        for name in ("ca-key.pem", "server-key.pem", "server-cert.pem", "ca.pem"):  # ca.pem last: exist() then holds
            Path(aside, name).replace(files.folder / name)
    return files


def server_options(folder):
    """``mariadbd`` options that make it offer TLS with the certificates in ``folder`` (made if missing)."""
    files = make_certificates(folder)
    return [f"--ssl-ca={files.ca}", f"--ssl-cert={files.cert}", f"--ssl-key={files.key}"]


def client_options(ca, verify=True):
    """mysqlclient's connect arguments for TLS trusting ``ca``: with ``verify``, the server's
    certificate must be signed by it and name the address connected to (``VERIFY_IDENTITY``)."""
    options = {"ssl": {"ca": str(ca)}}
    if verify:
        options["ssl_mode"] = "VERIFY_IDENTITY"
    return options
