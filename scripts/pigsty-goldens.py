#!/usr/bin/python3
"""Render golden files from Pigsty's etcd role, the way Ansible would.

Usage: scripts/pigsty-goldens.py PIGSTY_GIT_DIR OUT_DIR TAG...

For every TAG (a tag name or refs/tags/NAME; output goes under NAME) and every
inventory of that tag (conf/**/*.yml, and files/pigsty/*.yml where present),
this emulates Ansible's YAML inventory plugin, its variable precedence and its
templating, and writes for each host of the `etcd` group the files Pigsty's
etcd role writes on that host:

  OUT_DIR/<tag>/<inventory path without .yml>/inventory.yml  distilled inventory
  OUT_DIR/<tag>/<inventory path without .yml>/<host>/etcd.conf
  OUT_DIR/<tag>/<inventory path without .yml>/<host>/etcdctl.sh
  OUT_DIR/<tag>/<inventory path without .yml>/<host>/etcd.pass   (when the role writes it)
  OUT_DIR/<tag>/<inventory path without .yml>/<host>/meta.json   owner/group/mode per file
  OUT_DIR/manifest.json                                        what was rendered or skipped

Only python3, python3-yaml and python3-jinja2 are needed; Pigsty is read with
`git show`, nothing is checked out.
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping

import jinja2
import yaml

ANSIBLE_MANAGED = "Ansible managed"

# Vars the distilled inventory keeps: the ones the etcd templates read plus
# the identity/patroni facts Quorum derives from an inventory.
KEEP_VARS = {
    "version", "node_admin_enabled", "node_admin_username",
    "pg_cluster", "pg_seq", "pg_role", "pg_shard", "pg_mode", "pg_etcd_password",
    "pg_namespace", "pg_vip_enabled", "pg_vip_address", "pg_vip_interface",
    "patroni_port", "patroni_username", "patroni_password", "patroni_ssl_enabled",
    "cert_validity", "ansible_group_priority",
}

# Files of the role we reproduce, by destination path.
WANTED_DEST = {
    "/etc/etcd/etcd.conf": ("etcd_conf", "etcd.conf"),
    "/etc/profile.d/etcdctl.sh": ("etcdctl_sh", "etcdctl.sh"),
    "/etc/etcd/etcd.pass": ("etcd_pass", "etcd.pass"),
}


def keep_var(name):
    return name in KEEP_VARS or name.startswith("etcd_")


# --------------------------------------------------------------------------
# git access
# --------------------------------------------------------------------------
class Git:
    def __init__(self, gitdir):
        self.gitdir = gitdir

    def _run(self, *args):
        return subprocess.run(["git", "-C", self.gitdir, *args], check=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE).stdout

    def show(self, ref, path):
        try:
            return self._run("show", "%s:%s" % (ref, path)).decode("utf-8")
        except subprocess.CalledProcessError:
            return None

    def ls(self, ref, *paths):
        """[(path, mode)] of the files under paths."""
        out = self._run("ls-tree", "-r", ref, "--", *paths)
        res = []
        for line in out.decode("utf-8").splitlines():
            meta, path = line.split("\t", 1)
            res.append((path, meta.split()[0]))
        return res

    def commit(self, ref):
        return self._run("rev-parse", ref + "^{commit}").decode().strip()


# --------------------------------------------------------------------------
# YAML, as Ansible's loader reads it (YAML 1.1, SafeLoader based)
# --------------------------------------------------------------------------
class Unsafe(str):
    """A `!unsafe` string: Ansible never templates it."""


class Vault(str):
    """A `!vault` value: we cannot decrypt it."""


class Loader(yaml.SafeLoader):
    pass


Loader.add_constructor("!unsafe", lambda l, n: Unsafe(l.construct_scalar(n)))
Loader.add_constructor("!vault", lambda l, n: Vault(l.construct_scalar(n)))
Loader.add_constructor("!vault-encrypted", lambda l, n: Vault(l.construct_scalar(n)))


def load_yaml(text):
    return yaml.load(text, Loader=Loader)


# --------------------------------------------------------------------------
# Inventory, as ansible.plugins.inventory.yaml + InventoryData build it
# --------------------------------------------------------------------------
class Group:
    def __init__(self, name):
        self.name = name
        self.vars = {}
        self.hosts = []          # direct hosts, in insertion order
        self.children = []       # child groups, in insertion order
        self.parents = []
        self.priority = 1

    def __repr__(self):
        return "Group(%s)" % self.name


class Host:
    def __init__(self, name):
        self.name = name
        self.vars = {}
        self.direct_groups = []


class InventoryError(Exception):
    pass


_RANGE_RE = re.compile(r"^(.*?)\[([0-9a-zA-Z]+):([0-9a-zA-Z]+)(?::([0-9]+))?\](.*)$")


def expand_host_pattern(pattern):
    """Ansible's detect_range/expand_hostname_range, plus 'host:port'."""
    pattern = str(pattern)
    m = _RANGE_RE.match(pattern)
    if not m:
        # host:port (not IPv6)
        if pattern.count(":") == 1:
            h, p = pattern.split(":")
            if p.isdigit():
                raise InventoryError("host pattern with port %r is not supported" % pattern)
        return [pattern]
    head, beg, end, step, tail = m.groups()
    step = int(step) if step else 1
    if beg.isdigit() and end.isdigit():
        width = len(beg) if beg.startswith("0") and len(beg) > 1 else 0
        seq = ["%0*d" % (width, i) if width else str(i) for i in range(int(beg), int(end) + 1, step)]
    else:
        seq = [chr(c) for c in range(ord(beg), ord(end) + 1, step)]
    out = []
    for s in seq:
        out.extend(expand_host_pattern(head + s + tail))
    return out


class Inventory:
    def __init__(self, data):
        self.groups = {}
        self.hosts = {}
        self.notes = []
        self.add_group("all")
        self.add_group("ungrouped")
        self.add_child("all", "ungrouped")
        if not isinstance(data, Mapping):
            raise InventoryError("inventory is not a YAML mapping")
        for name, gdata in data.items():
            self._parse_group(name, gdata)
        self._reconcile()

    # -- InventoryData
    def add_group(self, name):
        if name not in self.groups:
            self.groups[name] = Group(name)
        return self.groups[name]

    def add_host(self, name, group):
        h = self.hosts.get(name)
        if h is None:
            h = self.hosts[name] = Host(name)
        g = self.groups[group]
        if name not in g.hosts:
            g.hosts.append(name)
        if group not in h.direct_groups:
            h.direct_groups.append(group)
        return h

    def add_child(self, parent, child):
        p, c = self.groups[parent], self.groups[child]
        if p is c:
            raise InventoryError("group %s is its own child" % parent)
        if c not in p.children:
            if p in self.descendants(c):
                raise InventoryError("group cycle %s <-> %s" % (parent, child))
            p.children.append(c)
            if p not in c.parents:
                c.parents.append(p)

    def set_group_var(self, group, key, value):
        g = self.groups[group]
        g.vars[key] = value
        if key == "ansible_group_priority":
            g.priority = int(value)

    # -- yaml plugin
    def _parse_group(self, name, gdata):
        if not isinstance(gdata, (Mapping, type(None))):
            self.notes.append("skipped group %r: not a mapping" % name)
            return None
        name = str(name)
        self.add_group(name)
        if gdata is None:
            return name
        for key, section in gdata.items():
            if isinstance(section, str):
                section = {section: None}
            if not isinstance(section, (Mapping, type(None))):
                self.notes.append("skipped key %r of group %r: not a mapping" % (key, name))
                continue
            if key not in ("vars", "children", "hosts"):
                self.notes.append("skipped unexpected key %r in group %r" % (key, name))
                continue
            if section is None:
                continue
            if key == "vars":
                for k, v in section.items():
                    self.set_group_var(name, k, v)
            elif key == "children":
                for sub, subdata in section.items():
                    sub = self._parse_group(sub, subdata)
                    if sub is not None:
                        self.add_child(name, sub)
            else:
                for pattern, hvars in section.items():
                    if hvars is not None and not isinstance(hvars, Mapping):
                        raise InventoryError("host %r has non-mapping vars" % pattern)
                    for hn in expand_host_pattern(pattern):
                        h = self.add_host(hn, name)
                        for k, v in (hvars or {}).items():
                            h.vars[k] = v
        return name

    def _reconcile(self):
        allg = self.groups["all"]
        for g in list(self.groups.values()):
            if g is not allg and not g.parents:
                self.add_child("all", g.name)
        for h in self.hosts.values():
            if not h.direct_groups:
                self.add_host(h.name, "ungrouped")
        # depth: longest path from all (what Group.add_child_group converges to)
        self.depth = {}

        def walk(g, d):
            if self.depth.get(g.name, -1) >= d:
                return
            self.depth[g.name] = d
            for c in g.children:
                walk(c, d + 1)
        walk(allg, 0)

    # -- queries
    def descendants(self, g):
        out, todo = [], list(g.children)
        while todo:
            c = todo.pop(0)
            if c not in out:
                out.append(c)
                todo.extend(c.children)
        return out

    def group_hosts(self, name):
        """Group.get_hosts(): own hosts, then children's, breadth first.

        Ansible walks levels below the direct children through a set, so the
        order of hosts reached only through grandchildren is not defined; we
        take list order and say so in the notes of the caller."""
        g = self.groups[name]
        ordered = [g] + list(g.children)
        seen = set(ordered)
        level = list(g.children)
        while level:
            nxt = []
            for p in level:
                for c in p.children:
                    if c not in seen:
                        seen.add(c)
                        ordered.append(c)
                        nxt.append(c)
            level = nxt
        hosts = []
        for grp in ordered:
            for h in grp.hosts:
                if h not in hosts:
                    hosts.append(h)
        return hosts

    def has_grandchildren(self, name):
        return any(c.children for c in self.groups[name].children)

    def host_groups(self, hname):
        """Every group the host is in, directly or through a child group."""
        out = []
        todo = [self.groups[g] for g in self.hosts[hname].direct_groups]
        while todo:
            g = todo.pop(0)
            if g not in out:
                out.append(g)
                todo.extend(g.parents)
        return out

    def host_inventory_vars(self, hname):
        """all.vars < groups by (depth, priority, name) < host vars; values replace."""
        v = dict(self.groups["all"].vars)
        gs = [g for g in self.host_groups(hname) if g.name != "all"]
        gs.sort(key=lambda g: (self.depth[g.name], g.priority, g.name))
        for g in gs:
            v.update(g.vars)
        v.update(self.hosts[hname].vars)
        return v

    def groups_dict(self):
        return {name: self.group_hosts(name) for name in self.groups}


# --------------------------------------------------------------------------
# Jinja, as Ansible's Templar sets it up
# --------------------------------------------------------------------------
class AnsibleUndefined(jinja2.StrictUndefined):
    """Fails on use like Ansible's; attribute/item access chains on."""

    def __getattr__(self, name):
        if name[:2] == "__":
            raise AttributeError(name)
        return self

    def __getitem__(self, key):
        return self


def _finalize(x):
    return "" if x is None else x


def f_regex_replace(value="", pattern="", replacement="", ignorecase=False, multiline=False, count=0,
                    mandatory_count=0):
    flags = (re.I if ignorecase else 0) | (re.M if multiline else 0)
    out, n = re.compile(pattern, flags=flags).subn(replacement, str(value), count=count)
    if mandatory_count and n != mandatory_count:
        raise jinja2.exceptions.FilterArgumentError("regex_replace: %d != %d" % (n, mandatory_count))
    return out


def f_bool(a):
    if a is None or isinstance(a, bool):
        return a
    if isinstance(a, str):
        a = a.lower()
    return a in ("yes", "on", "1", "true", 1)


def f_difference(a, b):
    return [x for i, x in enumerate(a) if x not in b and x not in a[:i]]


def f_ternary(value, true_val, false_val, none_val=None):
    if value is None and none_val is not None:
        return none_val
    return true_val if bool(value) else false_val


def make_env():
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=False, keep_trailing_newline=True,
                             undefined=AnsibleUndefined, finalize=_finalize, autoescape=False)
    env.filters.update({
        "regex_replace": f_regex_replace,
        "bool": f_bool,
        "difference": f_difference,
        "ternary": f_ternary,
    })
    return env


ENV = make_env()


def is_template(s):
    return isinstance(s, str) and not isinstance(s, (Unsafe, Vault)) and (
        "{{" in s or "{%" in s or "{#" in s)


class RenderError(Exception):
    pass


class Vars(Mapping):
    """A host's variables, templated lazily on lookup as Ansible does."""

    def __init__(self, raw, extra=None, host=None, tracker=None, inv_keys=()):
        self.raw = raw
        self.inv_keys = inv_keys    # keys whose value comes from the inventory
        self.extra = extra or {}     # magic vars, never templated
        self.host = host
        self.tracker = tracker
        self._cache = {}
        self._busy = set()

    def __contains__(self, k):
        return k in self.extra or k in self.raw or k in ENV.globals

    def __iter__(self):
        return iter(set(self.raw) | set(self.extra))

    def __len__(self):
        return len(set(self.raw) | set(self.extra))

    def __getitem__(self, k):
        if k in self.extra:
            return self.extra[k]
        if k not in self.raw:
            if k in ENV.globals:
                return ENV.globals[k]
            raise KeyError(k)
        if k in self._cache:
            return self._cache[k]
        if k in self._busy:
            raise RenderError("recursive loop templating %r" % k)
        self._busy.add(k)
        try:
            raw = self.raw[k]
            val = self.template(raw)
            if self.tracker is not None and has_template(raw) and k in self.inv_keys:
                self.tracker(self.host, k, raw, val)
        finally:
            self._busy.discard(k)
        self._cache[k] = val
        return val

    def template(self, v):
        if isinstance(v, Vault):
            raise RenderError("vault-encrypted value")
        if is_template(v):
            return convert(render_string(v, self))
        if isinstance(v, list):
            return [self.template(x) for x in v]
        if isinstance(v, Mapping):
            return {kk: self.template(x) for kk, x in v.items()}
        return v


def has_template(v):
    if is_template(v):
        return True
    if isinstance(v, list):
        return any(has_template(x) for x in v)
    if isinstance(v, Mapping):
        return any(has_template(x) for x in v.values())
    return False


def convert(s):
    """Templar._convert_data: results looking like literals become data."""
    if s in ("True", "False"):
        return s == "True"
    if s.startswith("[") or (s.startswith("{") and not s.startswith("{{")):
        try:
            return ast.literal_eval(s)
        except (ValueError, SyntaxError):
            return s
    return s


def render_string(text, variables):
    """Render with the variable mapping itself as the context parent (shared),
    so every lookup goes through Vars.__getitem__ lazily."""
    t = ENV.from_string(text)
    ctx = t.new_context(variables, shared=True)
    try:
        return "".join(t.root_render_func(ctx))
    except jinja2.exceptions.UndefinedError as e:
        raise RenderError("undefined: %s" % e)


# --------------------------------------------------------------------------
# Role reading: tasks -> files to write
# --------------------------------------------------------------------------
def kv_args(s):
    """'src=a dest=b owner=c' -> dict (Ansible's parse_kv for simple cases)."""
    toks, cur, depth, quote = [], "", 0, None
    for i, ch in enumerate(s):          # split on blanks outside quotes and {{ }}
        if quote:
            if ch == quote:
                quote = None
            else:
                cur += ch
            continue
        if ch in "'\"" and depth == 0:
            quote = ch
            continue
        if s.startswith("{{", i) or s.startswith("{%", i):
            depth += 1
        elif (s.startswith("}}", i) or s.startswith("%}", i)) and depth:
            depth -= 1
        if ch.isspace() and depth == 0:
            if cur:
                toks.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        toks.append(cur)
    out = {}
    for tok in toks:
        if "=" in tok:
            k, v = tok.split("=", 1)
            out[k] = v
    return out


def walk_tasks(tasks, inherited_vars=None):
    for t in tasks or []:
        if not isinstance(t, Mapping):
            continue
        tv = dict(inherited_vars or {})
        tv.update(t.get("vars") or {})
        if "block" in t:
            yield from walk_tasks(t["block"], tv)
            continue
        yield t, tv


def mode_str(m):
    if m is None:
        return None
    if isinstance(m, int):  # YAML 1.1 read 0644 as octal 420
        return "%04o" % m
    return str(m)


class FileSpec:
    def __init__(self, key, name, kind, source, owner, group, mode, task_vars):
        self.key, self.name, self.kind, self.source = key, name, kind, source
        self.owner, self.group, self.mode = owner, group, mode
        self.task_vars = task_vars


def role_files(git, ref):
    """FileSpecs for etcd.conf/etcdctl.sh/etcd.pass from roles/etcd/tasks/config.yml."""
    tasks = load_yaml(git.show(ref, "roles/etcd/tasks/config.yml"))
    specs = []
    for t, tv in walk_tasks(tasks):
        for mod in ("template", "copy", "ansible.builtin.template", "ansible.builtin.copy"):
            if mod in t:
                break
        else:
            continue
        args = t[mod]
        args = kv_args(args) if isinstance(args, str) else dict(args)
        items = t.get("with_items") or t.get("loop") or [None]
        for item in items:
            # task args are templated with only `item` (they hold nothing else we need)
            lenient = jinja2.Environment(undefined=jinja2.ChainableUndefined)
            a = {}
            for k, v in args.items():
                if k != "content" and isinstance(v, str) and "{{" in v:
                    v = lenient.from_string(v).render(item=item)
                a[k] = v
            dest = a.get("dest")
            if dest not in WANTED_DEST:
                continue
            key, name = WANTED_DEST[dest]
            kind = "template" if mod.endswith("template") else "copy"
            if kind == "template":
                src = a["src"]
                source = git.show(ref, "roles/etcd/templates/" + src)
                if source is None:
                    raise RuntimeError("%s: template %s missing" % (ref, src))
            else:
                source = a.get("content")
            specs.append(FileSpec(key, name, kind, source, a.get("owner") or None,
                                  a.get("group") or None, mode_str(a.get("mode")), tv))
    return specs


def import_vars(git, ref):
    """vars given to `import_tasks: config.yml` in roles/etcd/tasks/main.yml."""
    for t, tv in walk_tasks(load_yaml(git.show(ref, "roles/etcd/tasks/main.yml"))):
        if str(t.get("import_tasks", t.get("include_tasks", ""))).endswith("config.yml"):
            return dict(t.get("vars") or {})
    return {"etcd_instance": "{{ etcd_cluster }}-{{ etcd_seq }}"}


def role_defaults(git, ref):
    """Defaults of the roles etcd.yml runs (node_id, then etcd; later wins)."""
    d = {}
    for role in ("node_id", "etcd"):
        text = git.show(ref, "roles/%s/defaults/main.yml" % role)
        if text:
            d.update(load_yaml(text) or {})
    return d


# --------------------------------------------------------------------------
# Rendering one inventory
# --------------------------------------------------------------------------
class Skip(Exception):
    pass


def render_inventory(inv, defaults, ivars, specs):
    """Returns ({host: {filename: text}}, templated, notes)."""
    if "etcd" not in inv.groups:
        raise Skip("no etcd group")
    members = inv.group_hosts("etcd")
    if not members:
        raise Skip("etcd group has no hosts")
    notes = list(inv.notes)
    groups = inv.groups_dict()
    templated = []

    def track(host, k, raw, val):
        templated.append({"host": host, "var": k, "raw": raw, "value": val})

    inv_raw = {h: inv.host_inventory_vars(h) for h in inv.hosts}
    hostvars = {}
    for h in inv.hosts:
        hostvars[h] = Vars(inv_raw[h], extra={"inventory_hostname": h, "groups": groups,
                                              "group_names": sorted(g.name for g in inv.host_groups(h)
                                                                    if g.name != "all")},
                           host=h, tracker=track, inv_keys=inv_raw[h])
    for h in members:
        for k in ("etcd_seq",):
            if k not in inv_raw[h]:
                raise Skip("etcd member %s has no %s (the role's assert fails)" % (h, k))
    out = {}
    for h in members:
        files = {}
        for spec in specs:
            raw = dict(defaults)
            raw.update(inv_raw[h])
            raw.update(ivars)
            raw.update(spec.task_vars)
            extra = {"inventory_hostname": h, "inventory_hostname_short": h.split(".")[0],
                     "groups": groups, "hostvars": hostvars, "ansible_managed": ANSIBLE_MANAGED,
                     "group_names": hostvars[h].extra["group_names"]}
            inv_keys = {k for k in inv_raw[h]
                        if k not in ivars and k not in spec.task_vars}
            v = Vars(raw, extra=extra, host=h, tracker=track, inv_keys=inv_keys)
            try:
                files[spec.name] = render_string(spec.source, v)
                ec = v["etcd_cluster"]
                if ec != "etcd":
                    notes.append("%s: etcd_cluster=%r" % (h, ec))
                if ec in inv.groups and inv.has_grandchildren(ec):
                    notes.append("group %s has grandchildren: Ansible orders their hosts through "
                                 "a set, ETCDCTL_ENDPOINTS order may differ" % ec)
            except (RenderError, jinja2.TemplateError) as e:
                raise Skip("rendering %s for %s fails: %s" % (spec.name, h, e))
        out[h] = files
    # keep only templated vars relevant to the goldens, once each
    seen, rel = set(), []
    for t in templated:
        if keep_var(t["var"]) and (t["host"], t["var"]) not in seen:
            seen.add((t["host"], t["var"]))
            rel.append(t)
    return out, rel, sorted(set(notes))


# --------------------------------------------------------------------------
# Distilled inventory
# --------------------------------------------------------------------------
def distill(data, inv, defaults, problems):
    """Same group/host tree, same order, only the vars Quorum cares about.
    Templated values are written rendered (per host for host vars; for group
    vars, rendered for every host of the group and required to agree)."""

    def ctx(h):
        raw = dict(defaults)
        raw.update(inv.host_inventory_vars(h))
        return Vars(raw, extra={"inventory_hostname": h, "groups": inv.groups_dict()}, host=h)

    def render_value(v, hosts, where):
        if not has_template(v):
            return v
        vals = []
        for h in hosts:
            try:
                vals.append(ctx(h).template(v))
            except (RenderError, jinja2.TemplateError) as e:
                problems.append("%s: cannot render %r for %s: %s" % (where, v, h, e))
                return v
        if not vals:
            problems.append("%s: templated %r on a group without hosts, kept as is" % (where, v))
            return v
        if any(x != vals[0] for x in vals):
            problems.append("%s: templated %r renders differently per host, kept as is" % (where, v))
            return v
        return vals[0]

    def filt(vs, hosts, where):
        return {k: render_value(v, hosts, "%s.%s" % (where, k)) for k, v in (vs or {}).items() if keep_var(k)}

    def group(name, gdata):
        if gdata is None:
            return None
        out = {}
        for key, section in gdata.items():
            if isinstance(section, str):
                section = {section: None}
            if key == "vars":
                kept = filt(section, inv.group_hosts(str(name)), str(name))
                if kept:
                    out["vars"] = kept
            elif key == "children":
                out["children"] = {sub: group(sub, sd) for sub, sd in (section or {}).items()}
            elif key == "hosts":
                hs = {}
                for pat, hv in (section or {}).items():
                    hosts = expand_host_pattern(pat)
                    hs[pat] = filt(hv, hosts, "%s/%s" % (name, pat))
                out["hosts"] = hs
        return out

    return {name: group(name, gd) for name, gd in data.items()}


class Dumper(yaml.SafeDumper):
    pass


Dumper.add_representer(Unsafe, lambda d, s: d.represent_scalar("!unsafe", str(s)))
Dumper.add_representer(Vault, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", "<vault>"))


def dump_inventory(tree, header):
    body = yaml.dump(tree, Dumper=Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=1000)
    return header + body


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
def inventories(git, ref):
    paths = git.ls(ref, "conf", "files/pigsty")
    return sorted((p, m) for p, m in paths if p.endswith(".yml") and
                  (p.startswith("conf/") or p.startswith("files/pigsty/")))


def main(argv):
    if len(argv) < 4:
        sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
        return 2
    git = Git(argv[1])
    outdir = argv[2]
    manifest = {
        "generator": "scripts/pigsty-goldens.py",
        "ansible_managed": ANSIBLE_MANAGED,
        "tags": {},
    }
    old = os.path.join(outdir, "manifest.json")
    if os.path.exists(old):
        with open(old) as f:
            manifest["tags"] = json.load(f).get("tags", {})
    for ref in argv[3:]:
        tag = ref[len("refs/tags/"):] if ref.startswith("refs/tags/") else ref
        tagdir = os.path.join(outdir, tag)
        if os.path.isdir(tagdir):
            shutil.rmtree(tagdir)
        specs = role_files(git, ref)
        defaults = role_defaults(git, ref)
        ivars = import_vars(git, ref)
        entry = {"ref": ref, "commit": git.commit(ref),
                 "role_defaults": {k: v for k, v in defaults.items() if keep_var(k)},
                 "files": {s.key: {"dest": next(d for d, (k, _) in WANTED_DEST.items() if k == s.key),
                                   "how": s.kind} for s in specs},
                 "rendered": {}, "skipped": {}}
        meta = {s.key: {"owner": s.owner, "group": s.group, "mode": s.mode} for s in specs}
        for path, mode in inventories(git, ref):
            name = path[:-len(".yml")]
            text = git.show(ref, path)
            if mode == "120000":
                entry["skipped"][name] = "symlink to %s (rendered under its target)" % text.strip()
                continue
            try:
                data = load_yaml(text)
            except yaml.YAMLError as e:
                entry["skipped"][name] = ("YAML error, Ansible cannot load it either: %s"
                                          % " ".join(str(e).split()))
                continue
            if not isinstance(data, Mapping) or not any(isinstance(v, (Mapping, type(None))) for v in data.values()):
                entry["skipped"][name] = "not an inventory"
                continue
            try:
                inv = Inventory(data)
                files, templated, notes = render_inventory(inv, defaults, ivars, specs)
            except (Skip, InventoryError) as e:
                entry["skipped"][name] = str(e)
                continue
            d = os.path.join(tagdir, name)
            os.makedirs(d, exist_ok=True)
            problems = []
            tree = distill(data, inv, defaults, problems)
            header = ("# generated by scripts/pigsty-goldens.py from Pigsty %s %s, distilled:\n"
                      "# the same groups, hosts and order, only the vars Quorum reads.\n" % (tag, path))
            with open(os.path.join(d, "inventory.yml"), "w") as f:
                f.write(dump_inventory(tree, header))
            for h, fs in files.items():
                hd = os.path.join(d, h)
                os.makedirs(hd, exist_ok=True)
                for fname, text in fs.items():
                    with open(os.path.join(hd, fname), "wb") as f:
                        f.write(text.encode("utf-8"))
                with open(os.path.join(hd, "meta.json"), "w") as f:
                    json.dump(meta, f, indent=2, sort_keys=True)
                    f.write("\n")
            rec = {"hosts": len(files)}
            if templated:
                rec["templated_vars"] = templated
            if notes or problems:
                rec["notes"] = notes + problems
            entry["rendered"][name] = rec
        manifest["tags"][tag] = entry
        print("%s: %d rendered, %d skipped" % (tag, len(entry["rendered"]), len(entry["skipped"])))
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
