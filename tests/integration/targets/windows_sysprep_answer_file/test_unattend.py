# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks of the answer files runme.sh rendered from the windows_sysprep role's template."""

from __future__ import annotations

import base64
import os
import pathlib
import xml.etree.ElementTree as ET

import pytest
import yaml

HERE = pathlib.Path(__file__).parent
RENDERED = pathlib.Path(os.environ.get("WINDOWS_SYSPREP_RENDER_DIR", HERE / "rendered"))
ROLE = HERE.parents[3] / "roles" / "windows_sysprep"

NS = "urn:schemas-microsoft-com:unattend"
WCM = "http://schemas.microsoft.com/WMIConfig/2002/State"
U = "{%s}" % NS

# Valid configuration passes of each setting the template writes, from Microsoft's Unattended
# Windows Setup Reference (component, top-level setting): passes.
REFERENCE = "https://learn.microsoft.com/windows-hardware/customize/desktop/unattend/"
PASSES = {
    # microsoft-windows-international-core: "applied only in the specialize and oobeSystem passes"
    ("Microsoft-Windows-International-Core", "InputLocale"): {"specialize", "oobeSystem"},
    ("Microsoft-Windows-International-Core", "SystemLocale"): {"specialize", "oobeSystem"},
    ("Microsoft-Windows-International-Core", "UILanguage"): {"specialize", "oobeSystem"},
    ("Microsoft-Windows-International-Core", "UserLocale"): {"specialize", "oobeSystem"},
    # microsoft-windows-shell-setup-timezone
    ("Microsoft-Windows-Shell-Setup", "TimeZone"): {"auditSystem", "oobeSystem", "specialize"},
    # microsoft-windows-shell-setup-copyprofile
    ("Microsoft-Windows-Shell-Setup", "CopyProfile"): {"specialize"},
    # microsoft-windows-shell-setup-oobe
    ("Microsoft-Windows-Shell-Setup", "OOBE"): {"oobeSystem"},
    # microsoft-windows-shell-setup-firstlogoncommands
    ("Microsoft-Windows-Shell-Setup", "FirstLogonCommands"): {"oobeSystem"},
    # microsoft-windows-shell-setup-useraccounts (AdministratorPassword)
    ("Microsoft-Windows-Shell-Setup", "UserAccounts"): {"auditSystem", "oobeSystem"},
    # microsoft-windows-pnpsysprep-persistalldeviceinstalls
    ("Microsoft-Windows-PnpSysprep", "PersistAllDeviceInstalls"): {"generalize"},
    # microsoft-windows-security-spp-skiprearm
    ("Microsoft-Windows-Security-SPP", "SkipRearm"): {"generalize"},
}
# Children of OOBE the template may write (microsoft-windows-shell-setup-oobe-*); NetworkLocation,
# SkipMachineOOBE and SkipUserOOBE are deprecated (Windows 8 and later) and must never appear.
OOBE_CHILDREN = {
    "HideEULAPage",
    "HideOEMRegistrationScreen",
    "HideOnlineAccountScreens",
    "HideWirelessSetupInOOBE",
    "ProtectYourPC",
}
DEPRECATED = {"NetworkLocation", "SkipMachineOOBE", "SkipUserOOBE"}
COMPONENT_ATTRIBUTES = {
    "processorArchitecture": "amd64",
    "publicKeyToken": "31bf3856ad364e35",
    "language": "neutral",
    "versionScope": "nonSxS",
}

RENDERED_SETS = ["generic_all", "minimal", "first_logon", "password"]


def options(name):
    return yaml.safe_load((HERE / "options" / f"{name}.yml").read_text())


def rendered(name):
    return (RENDERED / f"{name}.xml").read_text(encoding="utf-8")


def tree(name):
    return ET.fromstring(rendered(name).encode("utf-8"))


def settings(root):
    """(pass, component, setting element) for every top-level setting."""
    for pass_ in root.findall(f"{U}settings"):
        for component in pass_.findall(f"{U}component"):
            for setting in component:
                yield pass_.get("pass"), component.get("name"), setting


def local(tag):
    return tag.split("}", 1)[1]


def encoded_admin_password(password):
    # how Windows System Image Manager hides it: Base64 of the UTF-16LE password + "AdministratorPassword"
    return base64.b64encode((password + "AdministratorPassword").encode("utf-16-le")).decode("ascii")


@pytest.mark.parametrize("name", RENDERED_SETS)
def test_well_formed_with_unattend_namespaces(name):
    text = rendered(name)
    root = ET.fromstring(text.encode("utf-8"))
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?>')
    assert root.tag == f"{U}unattend"
    assert f'xmlns:wcm="{WCM}"' in text
    passes = [s.get("pass") for s in root.findall(f"{U}settings")]
    assert len(passes) == len(set(passes)), "a pass appears twice"
    for pass_ in root.findall(f"{U}settings"):
        names = [c.get("name") for c in pass_.findall(f"{U}component")]
        assert len(names) == len(set(names)), f"a component appears twice in {pass_.get('pass')}"
        for component in pass_.findall(f"{U}component"):
            for attribute, value in COMPONENT_ATTRIBUTES.items():
                assert component.get(attribute) == value, (component.get("name"), attribute)
            assert len(component) > 0, f"empty component {component.get('name')}"


@pytest.mark.parametrize("name", RENDERED_SETS)
def test_each_setting_in_a_documented_pass(name):
    for pass_, component, setting in settings(tree(name)):
        key = (component, local(setting.tag))
        assert key in PASSES, f"{key} is not in the reference table"
        assert pass_ in PASSES[key], f"{key} in {pass_}; valid: {sorted(PASSES[key])} ({REFERENCE})"


@pytest.mark.parametrize("name", RENDERED_SETS)
def test_no_deprecated_elements(name):
    root = tree(name)
    assert not {local(e.tag) for e in root.iter()} & DEPRECATED
    for oobe in root.iter(f"{U}OOBE"):
        assert {local(e.tag) for e in oobe} <= OOBE_CHILDREN


def test_generic_all_has_every_setting():
    root = tree("generic_all")
    found = {(p, c, local(s.tag)): s for p, c, s in settings(root)}
    for pass_ in ("specialize", "oobeSystem"):
        assert found[(pass_, "Microsoft-Windows-International-Core", "InputLocale")].text == "0409:00000409"
        assert found[(pass_, "Microsoft-Windows-International-Core", "SystemLocale")].text == "de-DE"
        assert found[(pass_, "Microsoft-Windows-International-Core", "UILanguage")].text == "en-US"
        assert found[(pass_, "Microsoft-Windows-International-Core", "UserLocale")].text == "en-US"
    assert found[("specialize", "Microsoft-Windows-Shell-Setup", "TimeZone")].text == "W. Europe Standard Time"
    assert found[("specialize", "Microsoft-Windows-Shell-Setup", "CopyProfile")].text == "true"
    assert found[("generalize", "Microsoft-Windows-PnpSysprep", "PersistAllDeviceInstalls")].text == "true"
    assert found[("generalize", "Microsoft-Windows-Security-SPP", "SkipRearm")].text == "1"
    oobe = found[("oobeSystem", "Microsoft-Windows-Shell-Setup", "OOBE")]
    assert {local(e.tag): e.text for e in oobe} == {
        "HideEULAPage": "true",
        "HideOEMRegistrationScreen": "true",
        "HideOnlineAccountScreens": "true",
        "HideWirelessSetupInOOBE": "true",
        "ProtectYourPC": "1",
    }
    assert ("oobeSystem", "Microsoft-Windows-Shell-Setup", "UserAccounts") in found
    assert ("oobeSystem", "Microsoft-Windows-Shell-Setup", "FirstLogonCommands") in found


def test_minimal_has_only_the_oobe_defaults():
    root = tree("minimal")
    assert [s.get("pass") for s in root.findall(f"{U}settings")] == ["oobeSystem"]
    assert [(c, local(s.tag)) for _pass, c, s in settings(root)] == [("Microsoft-Windows-Shell-Setup", "OOBE")]
    oobe = root.find(f".//{U}OOBE")
    assert oobe.find(f"{U}ProtectYourPC").text == "3"


def test_first_logon_commands_in_order_and_escaped():
    commands = options("first_logon")["windows_sysprep_first_logon_commands"]
    text = rendered("first_logon")
    root = ET.fromstring(text.encode("utf-8"))
    elements = root.findall(f".//{U}FirstLogonCommands/{U}SynchronousCommand")
    assert len(elements) == len(commands)
    for order, (element, command) in enumerate(zip(elements, commands), start=1):
        assert element.get(f"{{{WCM}}}action") == "add"
        assert element.find(f"{U}Order").text == str(order)
        assert element.find(f"{U}CommandLine").text == command["command_line"]
        assert (element.find(f"{U}Description").text or "") == command.get("description", "")
    assert "&amp;" in text and "&gt;" in text and "&lt;first&gt;" in text


@pytest.mark.parametrize("name", ["generic_all", "password"])
def test_admin_password_encoded_as_windows_sim_does(name):
    password = options(name)["windows_sysprep_admin_password"]
    text = rendered(name)
    root = ET.fromstring(text.encode("utf-8"))
    element = root.find(f".//{U}UserAccounts/{U}AdministratorPassword")
    assert element.find(f"{U}PlainText").text == "false"
    value = element.find(f"{U}Value").text
    assert value == encoded_admin_password(password)
    assert base64.b64decode(value).decode("utf-16-le") == password + "AdministratorPassword"
    assert password not in text
    # the XML-escaped form is not there either
    assert password.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") not in text


def test_encoding_matches_microsofts_example():
    # The example of microsoft-windows-shell-setup-useraccounts-administratorpassword-value: password "pw".
    assert encoded_admin_password("pw") == "cAB3AEEAZABtAGkAbgBpAHMAdAByAGEAdABvAHIAUABhAHMAcwB3AG8AcgBkAA=="


@pytest.mark.parametrize("name", ["generic_all", "password", "azure"])
def test_password_never_in_the_playbook_output(name):
    password = options(name)["windows_sysprep_admin_password"]
    log = (RENDERED / f"{name}.log").read_text(encoding="utf-8")
    assert "PLAY RECAP" in log
    assert password not in log
    assert encoded_admin_password(password) not in log


def test_no_password_no_user_accounts():
    for name in ("minimal", "first_logon"):
        assert tree(name).find(f".//{U}UserAccounts") is None


def test_azure_renders_no_answer_file():
    assert not (RENDERED / "azure.xml").exists()
    assert "no answer file on platform azure" in (RENDERED / "azure.log").read_text(encoding="utf-8")


def test_role_never_logs_the_answer_file():
    tasks = yaml.safe_load((ROLE / "tasks" / "answer_file.yml").read_text())
    writes = [t for t in tasks if "ansible.windows.win_template" in t]
    assert len(writes) == 1
    assert writes[0]["ansible.windows.win_template"]["src"] == "unattend.xml.j2"
    assert writes[0]["no_log"] is True
