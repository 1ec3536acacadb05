"""What ``kiwispray init`` writes into a new site: the notes of images/ and templates/ and a
commented rules.toml. Pure: file names and texts; the command writes them and the database."""

from pathlib import Path

from ks.boot import images
from ks.core import rules

IMAGES_NOTE = """\
# images/

One directory per image; its name is the state that installs it (`edit-host -s NAME`).

- A KIWI build: `kiwispray image import NAME /path/to/<image>.install.tar` unpacks it
  into images/NAME and checks it; the shipped template boots it, no template of your own needed.
- Your own: images/NAME/host.ipxe (a Jinja2 iPXE script) beside the files it boots
  (kernel, initrd, disk image), served at /images/NAME/<file>.

See docs/images.md in KIWIspray's documentation.
"""

TEMPLATES_NOTE = """\
# templates/

Site templates override the shipped ones: templates/STATE.ipxe (Jinja2) or templates/STATE.tmpl
(the original KIWIspray's @VAR@ style) is the boot script of state STATE for every image that has no
host.ipxe of its own; templates/new.ipxe, templates/finished.ipxe and templates/kiwi.ipxe replace
what a waiting machine, an installed one and every KIWI image get. Empty: the shipped ones apply.

Machines with Secure Boot boot GRUB instead of iPXE (kiwispray serve --tftp-listen): the same
names with .grub for .ipxe and .grub.tmpl for .tmpl. `kiwispray render -i ID [--loader grub]`
shows what a machine would get now. See docs/templates.md in KIWIspray's documentation.
"""

RULES = """\
# Enrollment rules: what a machine seen for the first time gets. The first rule that
# matches it wins; a machine no rule matches starts in the server's initial chain
# ('new': it waits for an operator). `kiwispray rules check` checks this file;
# `kiwispray rules test --mac ...` shows which rule a machine would get.
#
# Uncomment and adapt (a chain's images must exist under images/):
#
# [[rule]]
# name = "rack4"                                              # letters, digits, . _ -; unique
# match = { mac = "52:54:00:04:*", product = "PowerEdge*" }   # shell-style globs; every key must fit
# chain = "image1"                                            # optional: the initial chain
# hostname = "rack4-{{ seq }}"                                # optional: a Jinja2 template; seq counts per rule
# labels = { rack = "4" }                                     # optional
#
# [[rule]]
# name = "everything-else"
# match = {}                                                  # fits every machine: a last catch-all
"""


def files(root: Path) -> dict[Path, str]:
    """The files a new site gets, by path."""
    return {
        images.images_dir(root) / "README.md": IMAGES_NOTE,
        Path(root) / "templates" / "README.md": TEMPLATES_NOTE,
        rules.path_of(root): RULES,
    }
