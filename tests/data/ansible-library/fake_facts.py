#!/usr/bin/python
"""Test-only Ansible module: report the facts it is given as the host's facts (ansible_facts).

tests/test_nvidia_driver_vars.py uses it to render the nvidia_driver role's per-distribution variables for
Ubuntu and arm64 hosts on a Debian x86_64 machine; the role's own tasks never see it.
"""

from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(argument_spec={"facts": {"type": "dict", "required": True}})
    module.exit_json(changed=False, ansible_facts=module.params["facts"])


if __name__ == "__main__":
    main()
