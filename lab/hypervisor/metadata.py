"""Parse the lab's `<lab:vm>` domain metadata back into identity and model."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from lab.domain.vm import METADATA_NS, VmIdentity, VmModel


def parse_metadata(xml: str) -> tuple[VmIdentity, VmModel, bool]:
    """`(identity, model, deallocated)` from the metadata element; ValueError if not ours."""
    root = ET.fromstring(xml)

    def optional(tag: str) -> str | None:
        el = root.find(f"{{{METADATA_NS}}}{tag}")
        if el is None:
            # libvirt returns the element with its children unprefixed in the namespace.
            el = root.find(tag)
        return None if el is None else el.text

    def text(tag: str) -> str:
        value = optional(tag)
        if value is None:
            raise ValueError(f"lab metadata has no <{tag}>")
        return value

    identity = VmIdentity(
        lab_id=text("labId"),
        subscription_id=text("subscriptionId"),
        resource_group=text("resourceGroup"),
        name=text("name"),
        vm_id=text("vmId"),
        # Scale-set instances only (and absent from domains made before scale sets existed).
        scale_set=optional("scaleSet"),
        instance_id=optional("instanceId"),
        computer_name=optional("computerName"),
    )
    model = VmModel.model_validate(json.loads(text("model")))
    return identity, model, text("allocation") == "deallocated"


def domain_name_of(domain_xml: str) -> str:
    """The `<name>` of a domain XML document."""
    name = ET.fromstring(domain_xml).findtext("name")
    if not name:
        raise ValueError("the domain XML has no <name>")
    return name
