"""Which ECG XML format a file is, told by its root element (read without parsing the rest):
GE CardioSoft ``CardiologyXML`` (UK Biobank) or GE MUSE ``RestingECG`` (hospital exports)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from data_modules.errors import RecordSkip

XML_FORMATS = {"CardiologyXML": "cardiosoft", "RestingECG": "muse"}  # root element -> format


def xml_format(path: str | os.PathLike, rel: str) -> str:
    """``cardiosoft`` or ``muse`` by the root element of ``path`` (only the first element is
    read); :class:`RecordSkip` naming ``rel`` and the root element for any other XML, or a
    file that is not well-formed XML."""
    try:
        for _, el in ET.iterparse(path, events=("start",)):
            tag = el.tag.rpartition("}")[2]  # without a namespace
            break
        else:
            raise RecordSkip(f"unusable XML: {rel}: no root element")
    except ET.ParseError as e:
        raise RecordSkip(f"unusable XML: {rel}: not well-formed XML ({e})") from None
    except OSError as e:
        raise RecordSkip(f"unusable XML: {rel}: cannot read ({e})") from None
    if tag not in XML_FORMATS:
        raise RecordSkip(f"unknown XML format: {rel}: root element <{tag}> is neither "
                         "CardioSoft <CardiologyXML> nor GE MUSE <RestingECG>")
    return XML_FORMATS[tag]
