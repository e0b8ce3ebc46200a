#!/usr/bin/env python3
"""Generates the EXAMPLE site inventory: config/sites/{dc,smart-dc,drc}.toml.

The inventory is an example built from facility-spec.md, to be replaced by the real one
(see docs/inventory.md). It is generated so that the three large files stay regular and
reviewable; the generated TOML is committed, and hand edits are fine once the real
inventory replaces this script's output.

    python3 scripts/gen-inventory.py            # writes config/sites/*.toml
    python3 scripts/gen-inventory.py --check    # exits 1 if the files differ from the output

Everything points at 127.0.0.1 (the simulators of firmware-stubs): dc 15000-15099,
smart-dc 15100-15199, drc 15200-15299.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def q(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def num(x):
    return repr(float(x)) if isinstance(x, float) else str(x)


class Out:
    def __init__(self):
        self.lines = []

    def __call__(self, line=""):
        self.lines.append(line)

    def text(self):
        return "\n".join(self.lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------------------
# Site definitions. Every number of facility-spec.md is cited where it is used.
# --------------------------------------------------------------------------------------

def staff(prefix, cred_base, people):
    """people: (role, name, shift_start, shift_end) -> staff entries with distinct credentials."""
    out = []
    counters = {}
    tags = {"control_room": "cr", "technical_escort": "te", "security": "sec"}
    for i, (role, name, start, end) in enumerate(people):
        counters[role] = counters.get(role, 0) + 1
        out.append({
            "id": "%s-%s-%02d" % (prefix, tags[role], counters[role]),
            "name": name,
            "role": role,
            # a card/PIN id and a fingerprint template id on the readers
            "credentials": [str(cred_base + i + 1), str(cred_base + 500 + i + 1)],
            "shift_start": start,
            "shift_end": end,
        })
    return out


DC = {
    "file": "dc.toml",
    "id": "dc",
    "name": "DC",
    "title": "Data Center (DC), Gd. Syafrudin Prawiranegara I, Jakarta",
    "building": "Gd. Syafrudin Prawiranegara I, Jakarta",
    "rack_positions": 264,
    "fire": "FM200/NOVEC",
    "ups": {"battery": "vrla", "redundancy": "N+1"},
    "genset": {"redundancy": "N+1", "autonomy_min_h": 12, "load_test_interval_months": 1},
    "cooling_kind": "pac",
    "rack_limit_kw": {"storage": 5.0, "server": 5.0, "network": 5.0},
    "rack_limit_note": "facility-spec: 5 kW per rack",
    "access": {
        "third_party_escort": "required",
        "destination_room_required": False,
    },
    "base_port": 15000,
    "reader_prefix": "DC",
    "rooms": [
        ("dh1", "Data Hall 1", "data_hall"),
        ("dh2", "Data Hall 2", "data_hall"),
        ("ups1", "UPS Room 1", "ups_room"),
        ("ups2", "UPS Room 2", "ups_room"),
        ("bat1", "Battery Room (VRLA)", "battery_room"),
        ("gen", "Genset Room", "genset_room"),
        ("elec", "Electrical Room (LVMDP, ATS)", "electrical_room"),
        ("fuel", "Fuel Store", "fuel_store"),
        ("mantrap", "Mantrap", "mantrap"),
        ("corridor", "Data Center Corridor", "corridor"),
        ("ocr", "Operating Control Room", "control_room"),
    ],
    # (hall, row letters, racks per row, per-row class plan)
    "halls": [
        ("dh1", "ABCDEF", 22),
        ("dh2", "GHIJKL", 22),
    ],
    # row index within the hall -> list of (first, last, class)
    "row_classes": lambda hall, idx, n: (
        [(1, 4, "network"), (5, n, "server")] if idx == 0
        else [(1, n, "server")] if idx < 4
        else [(1, n, "storage")]
    ),
    "ups_units": [("ups-1", "ups1"), ("ups-2", "ups1"), ("ups-3", "ups2")],
    "ups_rated_kw": 500.0,
    "gensets": ["gen-1", "gen-2", "gen-3"],
    "genset_rated_kw": 1000.0,
    "fuel_tank_l": 4000.0,
    "fuel_l_per_h_full": 265.0,
    "pac_per_hall": {"dh1": 5, "dh2": 5},
    "pac_rated_kw": 100.0,
    "vesda": [("dh1", 2), ("dh2", 2), ("ups1", 1), ("ups2", 1)],
    "th_rooms": ["ups1", "ups2", "bat1"],
    "leak": [("dh1", 2), ("dh2", 2), ("ups1", 1), ("ups2", 1)],
    "staff": staff("dc", 10000, [
        ("control_room", "Andi Prasetyo", "07:00", "19:00"),
        ("control_room", "Siti Rahmawati", "19:00", "07:00"),
        ("technical_escort", "Budi Santoso", "08:00", "17:00"),
        ("technical_escort", "Dewi Lestari", "08:00", "17:00"),
        ("technical_escort", "Rizky Firmansyah", "13:00", "22:00"),
        ("security", "Agus Wibowo", "07:00", "19:00"),
        ("security", "Yohanes Simanjuntak", "19:00", "07:00"),
    ]),
}

SMART = {
    "file": "smart-dc.toml",
    "id": "smart-dc",
    "name": "Smart DC",
    "title": "Smart DC, Gd. Bambang Subianto",
    "building": "Gd. Bambang Subianto",
    "rack_positions": 172,
    "fire": "Argonite IG-55",
    "ups": {"battery": "lithium", "redundancy": "2N"},
    "genset": {"redundancy": "2N", "autonomy_min_h": 96, "load_test_interval_months": 1},
    "cooling_kind": "inrow_pac",
    "rack_limit_kw": {"storage": 5.0, "server": 3.0, "network": 2.0},
    "rack_limit_note": "facility-spec: storage 5 kW, server 3 kW, network 2 kW per rack",
    "access": {
        "third_party_escort": "required",
        "destination_room_required": True,
    },
    "base_port": 15100,
    "reader_prefix": "SDC",
    "rooms": [
        ("storage", "Storage Hall", "data_hall"),
        ("server1", "Server Hall 1", "data_hall"),
        ("server2", "Server Hall 2", "data_hall"),
        ("network", "Network Room", "data_hall"),
        ("ups-a", "UPS Room A (path A)", "ups_room"),
        ("ups-b", "UPS Room B (path B)", "ups_room"),
        ("bat", "Battery Room (lithium)", "battery_room"),
        ("gen", "Genset Room", "genset_room"),
        ("elec", "Electrical Room (LVMDP, ATS)", "electrical_room"),
        ("fuel", "Fuel Store", "fuel_store"),
        ("mantrap", "Mantrap", "mantrap"),
        ("corridor", "Data Center Corridor", "corridor"),
        ("ocr", "Operating Control Room", "control_room"),
    ],
    # row letter O is skipped on purpose (reads like a zero on rack labels)
    "halls": [
        ("storage", "ABCD", 10),
        ("server1", "EFGHI", 10),
        ("server2", "JKLMN", 10),
        ("network", "PQ", 16),
    ],
    "row_classes": lambda hall, idx, n: [(1, n, {
        "storage": "storage", "server1": "server", "server2": "server", "network": "network",
    }[hall])],
    "ups_units": [("ups-a1", "ups-a"), ("ups-a2", "ups-a"), ("ups-b1", "ups-b"), ("ups-b2", "ups-b")],
    "ups_rated_kw": 250.0,
    "gensets": ["gen-a1", "gen-a2", "gen-b1", "gen-b2"],
    "genset_rated_kw": 500.0,
    "fuel_tank_l": 15000.0,
    "fuel_l_per_h_full": 135.0,
    "inrow_per_row": 2,
    "inrow_rated_kw": 40.0,
    "vesda": [("storage", 1), ("server1", 2), ("server2", 2), ("network", 1), ("ups-a", 1), ("ups-b", 1)],
    "th_rooms": ["ups-a", "ups-b", "bat"],
    "leak": [("storage", 2), ("server1", 2), ("server2", 2), ("network", 1), ("ups-a", 1), ("ups-b", 1)],
    "staff": staff("sdc", 20000, [
        ("control_room", "Rina Kartika", "07:00", "19:00"),
        ("control_room", "Hendra Gunawan", "19:00", "07:00"),
        ("technical_escort", "Fajar Nugroho", "08:00", "17:00"),
        ("technical_escort", "Maya Sari", "08:00", "17:00"),
        ("technical_escort", "Taufik Hidayat", "13:00", "22:00"),
        ("security", "Joko Susilo", "07:00", "19:00"),
        ("security", "Made Sudarsana", "19:00", "07:00"),
    ]),
}

DRC = {
    "file": "drc.toml",
    "id": "drc",
    "name": "DRC",
    "title": "Disaster Recovery Center (DRC)",
    "building": "DRC, disaster recovery site",
    "rack_positions": 292,
    "fire": "Inergen",
    "ups": {"battery": "vrla", "redundancy": "N+1"},
    "genset": {"redundancy": "N+1", "autonomy_min_h": 12, "load_test_interval_months": 2},
    "cooling_kind": "pac",
    "rack_limit_kw": {"storage": 5.0, "server": 5.0, "network": 5.0},
    "rack_limit_note": "facility-spec: 5 kW per rack",
    "access": {
        "third_party_escort": "optional",
        "destination_room_required": False,
    },
    "base_port": 15200,
    "reader_prefix": "DRC",
    "rooms": [
        ("dh1", "Data Hall 1", "data_hall"),
        ("dh2", "Data Hall 2", "data_hall"),
        ("dh3", "Data Hall 3", "data_hall"),
        ("ups1", "UPS Room 1", "ups_room"),
        ("ups2", "UPS Room 2", "ups_room"),
        ("bat1", "Battery Room (VRLA)", "battery_room"),
        ("gen", "Genset Room", "genset_room"),
        ("elec", "Electrical Room (LVMDP, ATS)", "electrical_room"),
        ("fuel", "Fuel Store", "fuel_store"),
        ("mantrap", "Mantrap", "mantrap"),
        ("corridor", "Data Center Corridor", "corridor"),
        ("ocr", "Operating Control Room", "control_room"),
    ],
    "halls": [
        ("dh1", "ABCDE", 20),
        ("dh2", "FGHI", 24),
        ("dh3", "JKLM", 24),
    ],
    "row_classes": lambda hall, idx, n: (
        [(1, 4, "network"), (5, n, "server")] if idx == 0
        else [(1, n, "storage")] if idx == 1
        else [(1, n, "server")]
    ),
    "ups_units": [("ups-1", "ups1"), ("ups-2", "ups1"), ("ups-3", "ups2")],
    "ups_rated_kw": 400.0,
    "gensets": ["gen-1", "gen-2", "gen-3"],
    "genset_rated_kw": 800.0,
    "fuel_tank_l": 3200.0,
    "fuel_l_per_h_full": 212.0,
    "pac_per_hall": {"dh1": 4, "dh2": 4, "dh3": 4},
    "pac_rated_kw": 100.0,
    "vesda": [("dh1", 2), ("dh2", 2), ("dh3", 2), ("ups1", 1), ("ups2", 1)],
    "th_rooms": ["ups1", "ups2", "bat1"],
    "leak": [("dh1", 2), ("dh2", 2), ("dh3", 2), ("ups1", 1), ("ups2", 1)],
    "staff": staff("drc", 30000, [
        ("control_room", "Wahyu Saputra", "07:00", "19:00"),
        ("control_room", "Indah Permata", "19:00", "07:00"),
        ("technical_escort", "Arief Rahman", "08:00", "17:00"),
        ("technical_escort", "Nur Aisyah", "08:00", "17:00"),
        ("security", "Bambang Hartono", "07:00", "19:00"),
        ("security", "Stefanus Lumban Gaol", "19:00", "07:00"),
    ]),
}

SITES = [DC, SMART, DRC]


# --------------------------------------------------------------------------------------
# Emission
# --------------------------------------------------------------------------------------

def ep(site, offset):
    port = site["base_port"] + offset
    assert site["base_port"] <= port < site["base_port"] + 100, port
    return "%s:%d" % (HOST, port)


def rows_of(site):
    """[(hall, letter, n)] in order."""
    return [(hall, letter, n) for hall, letters, n in site["halls"] for letter in letters]


def emit_site(site):
    o = Out()
    sid = site["id"]
    o("# %s: the site's facts, rooms, racks, devices and access policy." % site["title"])
    o("#")
    o("# EXAMPLE INVENTORY, generated by scripts/gen-inventory.py: a realistic inventory built")
    o("# from the facility numbers, to be REPLACED by the real one before production (see")
    o("# docs/inventory.md). The facts under [site] are the shipped defaults of facility-spec.md")
    o("# and are asserted by tests. Contract: docs/configuration.md. Every address is on")
    o("# 127.0.0.1, served by dcguard-sim (ports %d-%d)." % (site["base_port"], site["base_port"] + 99))
    o()
    def kv(key, value, comment=None):
        line = "%s = %s" % (key, value)
        if comment:
            line = line.ljust(36) + " # " + comment
        o(line)

    g = site["genset"]
    ups = site["ups"]
    o("[site]")
    kv("id", q(sid))
    kv("name", q(site["name"]))
    kv("building", q(site["building"]), "facility-spec: building")
    kv("time_zone", q("Asia/Jakarta"))
    kv("rack_positions", site["rack_positions"], "facility-spec: rack positions (max)")
    kv("floor_load_max_kg_m2", 1200, "facility-spec: max floor load 1200 kg/m2")
    kv("utility_feeds", 2, "facility-spec: two active-active PLN substations")
    kv("fire_suppression", q(site["fire"]), "facility-spec: clean agent in the hall")
    o()
    o("[site.ups]")
    kv("backup_time_min", 10, "facility-spec: backup time at most 10 min")
    kv("battery", q(ups["battery"]), "facility-spec: %s batteries" % ("VRLA" if ups["battery"] == "vrla" else "lithium"))
    kv("redundancy", q(ups["redundancy"]), "facility-spec: redundant; example: %s" % (
        "two independent UPS paths (2N), as the gensets" if ups["redundancy"] == "2N" else "N+1 modules"))
    o()
    o("[site.genset]")
    kv("rating", q("prime"), "facility-spec: prime rated")
    kv("redundancy", q(g["redundancy"]), "facility-spec: redundancy %s" % g["redundancy"])
    kv("autonomy_min_h", g["autonomy_min_h"], "facility-spec: at least %d h nonstop without refuelling" % g["autonomy_min_h"])
    kv("load_test_interval_months", g["load_test_interval_months"], "facility-spec: load test %s" % (
        "monthly" if g["load_test_interval_months"] == 1 else "every 2 months"))
    o()
    o("[site.cooling]")
    kv("kind", q(site["cooling_kind"]), "facility-spec: %s" % (
        "in-row PAC" if site["cooling_kind"] == "inrow_pac" else "Precision Air Conditioner (PAC)"))
    kv("redundancy", q("N+1"), "example: N+1 %s" % ("per rack row" if site["cooling_kind"] == "inrow_pac" else "per data hall"))
    o()
    o("[site.data_hall]                     # facility-spec: data hall 18-27 degC, 30-60 %RH")
    kv("temperature_min_c", "18.0")
    kv("temperature_max_c", "27.0")
    kv("humidity_min_pct", "30.0")
    kv("humidity_max_pct", "60.0")
    o()
    o("# %s; feeds A and B are each rated at it." % site["rack_limit_note"])
    o("[site.rack_limit_kw]")
    for cls in ("storage", "server", "network"):
        kv(cls, num(site["rack_limit_kw"][cls]))
    o()

    # ---------------------------------------------------------------- access
    a = site["access"]
    o("# --- Access policy (facility-spec: service ITSM.3) ------------------------------------")
    o("[access]")
    if sid == "drc":
        o("# Third-party escort at the DRC: the service catalog (ITSM.3) says third parties MAY be")
        o("# accompanied by their unit's PIC at the DRC; the older service standard (seed 003,")
        o("# section 3) says they MUST be accompanied at both the DC and the DRC. The default")
        o("# follows the newer catalog: \"optional\" (a missing PIC is an info finding, not a")
        o("# violation). Set \"required\" here if the ministry applies the service standard.")
        o('third_party_escort = "optional"')
    else:
        kv("third_party_escort", q("required"), "facility-spec: third parties MUST be accompanied by their PIC")
    if a["destination_room_required"]:
        kv("destination_room_required", "true", "facility-spec: the Smart DC plan must name the room(s)")
    else:
        kv("destination_room_required", "false", "facility-spec: rooms required at the Smart DC only")
    kv("technical_escort_required", "true", "facility-spec: a technical escort on every visit")
    kv("escort_max_gap_secs", 30, "PIC passes the same reader within 30 s of the third party (latency: docs/configuration.md)")
    kv("entry_grace_before_min", 30, "entry allowed 30 min before the ticket window")
    kv("overstay_grace_min", 30, "still inside 30 min after the window: overstay")
    o()
    p = site["reader_prefix"]
    o("# Readers: the mantrap's outer pair (into / out of the mantrap), its inner pair (into /")
    o("# out of the data center corridor) and a pair on every data hall door.")
    readers = [
        ("%s-MT-OUT-01" % p, "mantrap", "entry", "mantrap outer door, outside reader"),
        ("%s-MT-OUT-02" % p, "mantrap", "exit", "mantrap outer door, inside reader"),
        ("%s-MT-IN-01" % p, "corridor", "entry", "mantrap inner door, mantrap side"),
        ("%s-MT-IN-02" % p, "corridor", "exit", "mantrap inner door, corridor side"),
    ]
    for rid, _name, kind in site["rooms"]:
        if kind == "data_hall":
            tag = rid.upper().replace("-", "")
            readers.append(("%s-%s-01" % (p, tag), rid, "entry", "%s door, corridor side" % rid))
            readers.append(("%s-%s-02" % (p, tag), rid, "exit", "%s door, hall side" % rid))
    for serial, room, direction, note in readers:
        o("[[access.readers]]                   # %s" % note)
        o("serial = %s" % q(serial))
        o("room = %s" % q(room))
        o("direction = %s" % q(direction))
        o()
    o("# Site staff who need no ticket (fictional names). Credentials are distinct across the site.")
    for s in site["staff"]:
        o("[[access.staff]]")
        o("id = %s" % q(s["id"]))
        o("name = %s" % q(s["name"]))
        o("role = %s" % q(s["role"]))
        o("credentials = [%s]" % ", ".join(q(c) for c in s["credentials"]))
        o("shift_start = %s" % q(s["shift_start"]))
        o("shift_end = %s" % q(s["shift_end"]))
        o()

    # ---------------------------------------------------------------- rooms
    o("# --- Rooms ----------------------------------------------------------------------------")
    for rid, name, kind in site["rooms"]:
        o("[[rooms]]")
        o("id = %s" % q(rid))
        o("name = %s" % q(name))
        o("kind = %s" % q(kind))
        o()

    # ---------------------------------------------------------------- racks
    total = 0
    o("# --- Racks: %d positions (facility-spec), in rows of one hall each ---------------" % site["rack_positions"])
    for hall_idx, (hall, letters, n) in enumerate(site["halls"]):
        for idx, letter in enumerate(letters):
            for first, last, cls in site["row_classes"](hall, idx, n):
                o("[[racks]]")
                o('id = "%s%02d..%s%02d"' % (letter, first, letter, last))
                o("room = %s" % q(hall))
                o("class = %s" % q(cls))
                o()
                total += last - first + 1
    assert total == site["rack_positions"], (sid, total)

    # ---------------------------------------------------------------- rack meters
    o("# --- Rack feed meters: A and B per rack, one serial-to-TCP gateway per row ------------")
    o("# Units are rack-major, feed-minor: <row>01-a = 1, <row>01-b = 2, <row>02-a = 3, ...")
    for i, (hall, letter, n) in enumerate(rows_of(site)):
        assert 2 * n <= 247
        o("[[rack_meters]]")
        o('racks = "%s01..%s%02d"' % (letter, letter, n))
        o('profile = "rack-meter"')
        o("endpoint = %s" % q(ep(site, 40 + i)))
        o("unit_start = 1")
        o("poll_interval_secs = 10")
        o()

    # ---------------------------------------------------------------- devices
    def device(did, name, profile, room, modbus=None, mqtt=None, poll=None, extra=()):
        o("[[devices]]")
        o("id = %s" % q(did))
        o("name = %s" % q(name))
        o("profile = %s" % q(profile))
        o("room = %s" % q(room))
        if modbus:
            o("modbus = { endpoint = %s, unit = %d }" % (q(modbus[0]), modbus[1]))
        if mqtt:
            o('mqtt = { broker = "sim", topic = %s }' % q(mqtt))
        if poll:
            o("poll_interval_secs = %d" % poll)
        for k, v in extra:
            o("%s = %s" % (k, q(v) if isinstance(v, str) else num(v)))
        o()

    o("# --- UPS (%s, %s batteries) ---------------------------------------------------------" % (site["ups"]["redundancy"], site["ups"]["battery"]))
    for i, (did, room) in enumerate(site["ups_units"]):
        path = ""
        if site["ups"]["redundancy"] == "2N":
            path = " (path %s)" % did[4].upper()
        device(did, "UPS module %s%s" % (did[4:].upper(), path), "ups-galaxy", room,
               modbus=(ep(site, 1 + i), 1), poll=5, extra=[("rated_kw", site["ups_rated_kw"])])

    o("# --- Gensets (prime rated, %s); fuel sizing: docs/inventory.md --------------------" % site["genset"]["redundancy"])
    for i, did in enumerate(site["gensets"]):
        device(did, "Genset %s" % did[4:].upper(), "genset-dse", "gen",
               modbus=(ep(site, 5 + i), 1), poll=5,
               extra=[("rated_kw", site["genset_rated_kw"]), ("fuel_tank_l", site["fuel_tank_l"]),
                      ("fuel_l_per_h_full", site["fuel_l_per_h_full"])])

    o("# --- Utility supply: two active-active PLN feeds and the transfer switch --------------")
    device("util-a", "PLN incomer A", "utility-meter", "elec", modbus=(ep(site, 10), 1), poll=5,
           extra=[("feed", "A")])
    device("util-b", "PLN incomer B", "utility-meter", "elec", modbus=(ep(site, 11), 1), poll=5,
           extra=[("feed", "B")])
    device("ats-1", "Main transfer switch", "ats", "elec", modbus=(ep(site, 12), 1), poll=5)

    o("# --- VESDA detectors behind one Modbus HLI (one unit id per detector) ---------------")
    unit = 0
    for room, count in site["vesda"]:
        for k in range(1, count + 1):
            unit += 1
            device("vesda-%s-%d" % (room, k), "VESDA %s %d" % (room, k), "vesda-hli", room,
                   modbus=(ep(site, 15), unit), poll=5)

    if site["cooling_kind"] == "pac":
        o("# --- Precision air conditioners (N+1 per hall), one IntelliSlot card each ------------")
        i = 0
        for hall, count in site["pac_per_hall"].items():
            for k in range(1, count + 1):
                device("pac-%s-%d" % (hall, k), "PAC %s-%d" % (hall, k), "pac-liebert", hall,
                       modbus=(ep(site, 20 + i), 1), poll=10, extra=[("rated_kw", site["pac_rated_kw"])])
                i += 1
    else:
        o("# --- In-row cooling units (N+1 per row), one RS-485 gateway per hall ------------------")
        o("# `rack` is the rack each unit stands beside.")
        for h, (hall, letters, n) in enumerate(site["halls"]):
            unit = 0
            for letter in letters:
                per = site["inrow_per_row"]
                for k in range(1, per + 1):
                    unit += 1
                    beside = round(k * n / (per + 1))
                    device("inrow-%s%d" % (letter.lower(), k), "In-row cooling %s-%d" % (letter, k),
                           "pac-inrow", hall, modbus=(ep(site, 20 + h), unit), poll=10,
                           extra=[("rated_kw", site["inrow_rated_kw"]), ("rack", "%s%02d" % (letter, beside))])

    o("# --- Temperature / humidity sensors (MQTT): one per rack row at the cold aisle, one per")
    o("# UPS and battery room")
    for hall, letter, n in rows_of(site):
        did = "th-%s" % letter.lower()
        device(did, "T/RH row %s" % letter, "env-th-json", hall,
               mqtt="dcguard/%s/%s/th/%s" % (sid, hall, did), extra=[("rack", "%s%02d" % (letter, (n + 1) // 2))])
    for room in site["th_rooms"]:
        did = "th-%s" % room
        device(did, "T/RH %s" % room, "env-th-json", room, mqtt="dcguard/%s/%s/th/%s" % (sid, room, did))

    o("# --- Water leak sensors (MQTT): under the raised floor of the halls and UPS rooms")
    for room, count in site["leak"]:
        for k in range(1, count + 1):
            did = "leak-%s-%d" % (room, k)
            device(did, "Leak %s %d" % (room, k), "leak-json", room,
                   mqtt="dcguard/%s/%s/leak/%s" % (sid, room, did))

    return o.text()


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for site in SITES:
        path = ROOT / "config" / "sites" / site["file"]
        text = emit_site(site)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
            print("wrote", path.relative_to(ROOT))
    if stale:
        print("out of date (run scripts/gen-inventory.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
