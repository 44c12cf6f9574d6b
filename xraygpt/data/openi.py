"""The OpenI (Indiana University) report archive, read once for every use.

``NLMCXR_reports.tgz`` holds one ``ecgen-radiology/N.xml`` per report: its
FINDINGS and IMPRESSION texts, the images it describes and its MeSH ``major``
tags. Data preparation (:mod:`xraygpt.data.prepare`), the tiny tokenizer
(:mod:`xraygpt.data.tokenizer`) and the labeler's agreement check
(:mod:`xraygpt.eval.openi_agreement`) all read it through
:func:`read_openi_reports`. A copy ships inside the ``torchxrayvision`` package
(:func:`find_archive`), which is how the tests and the tiny recipe get real
report text with nothing downloaded.
"""

from __future__ import annotations

import importlib.util
import re
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from xraygpt.common.errors import DataError, MissingFileError

ARCHIVE_NAME = "NLMCXR_reports.tgz"
DOWNLOAD_HINT = (
    f"download {ARCHIVE_NAME} from https://openi.nlm.nih.gov/faq (a copy ships in the "
    f"torchxrayvision package: torchxrayvision/data/{ARCHIVE_NAME})"
)


@dataclass(frozen=True)
class OpenIReport:
    report_id: str  # the file's stem, e.g. "1" for ecgen-radiology/1.xml
    findings: str
    impression: str
    major_tags: tuple[str, ...] = ()  # MeSH major headings, e.g. "Cardiomegaly/mild"
    uid: str = ""  # the report's own id (uId, e.g. "CXR1"), prepare's report id
    image_ids: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return " ".join(part for part in (self.findings, self.impression) if part).strip()


def find_archive() -> Path:
    """The report archive inside the installed ``torchxrayvision`` (not imported: it is slow)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise MissingFileError(
            f"the OpenI report archive {ARCHIVE_NAME} comes with the torchxrayvision package, "
            f"which is not installed: pip install -r requirements.txt (or name the archive)"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / ARCHIVE_NAME
        if path.is_file():
            return path
    raise MissingFileError(
        f"{ARCHIVE_NAME} not found in torchxrayvision's data folder "
        f"({', '.join(spec.submodule_search_locations)}); reinstall torchxrayvision"
    )


def _number(name: str) -> int:
    match = re.search(r"(\d+)\.xml$", name)
    return int(match.group(1)) if match else -1


def parse_openi_xml(data: bytes, source: str) -> OpenIReport:
    """One ``ecgen-radiology/N.xml`` report; ``source`` names it in errors."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise DataError(f"{source}: not valid XML: {err}") from err
    sections: dict[str, str] = {}
    for node in root.iter("AbstractText"):
        sections[(node.get("Label") or "").upper()] = "".join(node.itertext()).strip()
    uid = root.find("uId")
    stem = Path(source.rpartition(":")[2]).stem
    images = [node.get("id") for node in root.iter("parentImage") if node.get("id")]
    return OpenIReport(
        report_id=stem,
        findings=sections.get("FINDINGS", ""),
        impression=sections.get("IMPRESSION", ""),
        major_tags=tuple(node.text.strip() for node in root.iter("major") if node.text),
        uid=str(uid.get("id")) if uid is not None and uid.get("id") else stem,
        image_ids=tuple(dict.fromkeys(images)),
    )


def read_openi_reports(path: str | Path | None = None) -> list[OpenIReport]:
    """Every report of ``NLMCXR_reports.tgz`` (or of its extracted folder; default:
    torchxrayvision's copy), in file-number order (1, 2, ..., 3999)."""
    path = Path(path) if path is not None else find_archive()
    if not path.exists():
        raise MissingFileError(f"the OpenI report archive {path} not found; {DOWNLOAD_HINT}")
    items: list[tuple[str, bytes]] = []
    if path.is_dir():
        items = [(str(file), file.read_bytes()) for file in path.rglob("*.xml")]
    else:
        try:
            with tarfile.open(path) as archive:
                for member in archive:
                    if member.isfile() and member.name.endswith(".xml"):
                        handle = archive.extractfile(member)
                        if handle is not None:
                            items.append((f"{path}:{member.name}", handle.read()))
        except (tarfile.TarError, OSError) as err:
            raise DataError(
                f"cannot read the OpenI report archive {path}: not a readable tar archive: {err}"
            ) from err
    if not items:
        raise DataError(f"{path}: no .xml reports found (expected ecgen-radiology/N.xml)")
    items.sort(key=lambda item: (_number(item[0]), item[0]))
    return [parse_openi_xml(data, name) for name, data in items]
