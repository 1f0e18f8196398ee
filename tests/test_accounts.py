"""The accounts directory: CSV and TOML files, dict lookups, conflicts with file:line."""

from pathlib import Path

from bridge.classify.accounts import Account, AccountsDirectory, load_accounts

CSV = """\
id,name,aliases,foreign_ids,senders
ACME-001,Acme Corp,Acme HQ; Acme,acme,@acme.example; alerts@partner.example
GLOBEX-002,Globex Corporation,,1002,
INITECH-003,  Initech  ,Initech Montréal,,@initech.example
"""


def load(tmp_path: Path, text: str, name: str = "accounts.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_accounts(path)


def test_csv_loads_every_way_of_naming_an_account(tmp_path: Path) -> None:
    accounts, problems = load(tmp_path, CSV)
    assert problems == [] and len(accounts) == 3
    assert [a.id for a in accounts.all()] == ["ACME-001", "GLOBEX-002", "INITECH-003"]
    acme = accounts.get("acme-001")
    assert acme is not None and acme.aliases == ("Acme HQ", "Acme")
    assert acme.senders == ("@acme.example", "alerts@partner.example")


def test_lookups_are_case_insensitive_trimmed_and_unicode(tmp_path: Path) -> None:
    accounts, _ = load(tmp_path, CSV)
    assert accounts.find("  ACME   hq ") == (accounts.get("ACME-001"), "via name")
    assert accounts.find("1002")[1] == "via foreign id"
    assert accounts.find("globex-002")[1] == "via record id"
    assert accounts.find("initech") is not None                       # trimmed name
    assert accounts.find("INITECH MONTRE\u0301AL")[0].id == "INITECH-003"  # NFC + case fold
    assert accounts.find("1002", ("name",)) is None                   # search limited
    assert accounts.find("") is None and accounts.find("nobody") is None


def test_sender_lookup_by_address_domain_and_parent_domain(tmp_path: Path) -> None:
    accounts, _ = load(tmp_path, CSV)
    assert accounts.find_sender("Alerts@Partner.example")[0].id == "ACME-001"
    assert accounts.find_sender("x@partner.example") is None       # address, not domain
    assert accounts.find_sender("ops@acme.example")[1] == "via sender domain acme.example"
    assert accounts.find_sender("fw@site.eu.initech.example")[0].id == "INITECH-003"
    assert accounts.find_sender("x@example") is None and accounts.find_sender("") is None


def test_toml_accounts_file(tmp_path: Path) -> None:
    text = ('[[accounts]]\nid = "A-1"\nname = "Alpha"\nforeign_ids = ["a1", "a-one"]\n'
            'senders = ["@alpha.example"]\n\n[[accounts]]\nid = "B-2"\nname = "Beta"\n')
    accounts, problems = load(tmp_path, text, "accounts.toml")
    assert problems == [] and accounts.find("A-ONE")[0].id == "A-1"


def test_conflicts_are_errors_with_line_and_account(tmp_path: Path) -> None:
    text = CSV + ("UMB-4,Umbrella,,acme,@acme.example\n"      # line 5: foreign id + domain clash
                  "ACME-001,Acme Again,,,\n"                  # line 6: same id twice
                  "SOY-5,Soylent,Globex Corporation,,\n")     # line 7: name of another account
    _, problems = load(tmp_path, text)
    text_of = [str(p) for p in problems]
    path = tmp_path / "accounts.csv"
    assert f"{path}:5: UMB-4: foreign id 'acme' is also claimed by account ACME-001" in text_of
    assert f"{path}:5: UMB-4: sender @acme.example is also claimed by account ACME-001" in text_of
    assert f"{path}:6: ACME-001: account id 'ACME-001' is listed twice" in text_of
    assert f"{path}:7: SOY-5: name 'Globex Corporation' is also claimed by account GLOBEX-002" in text_of
    assert len(problems) == 4


def test_bad_rows_and_columns(tmp_path: Path) -> None:
    _, problems = load(tmp_path, "id,name,email\nA-1,,x\nB-2,Beta,y\n")
    text = "\n".join(str(p) for p in problems)
    assert "accounts.csv:1: unknown column/key email; known: id, name" in text
    assert "accounts.csv:2: A-1: an account needs an id and a name" in text
    assert len(problems) == 2
    _, problems = load(tmp_path, "id,name,senders\nA-1,Alpha,not an address\n")
    assert "sender 'not an address' is neither an address nor '@domain'" in str(problems[0])
    _, problems = load(tmp_path, "")
    assert "empty accounts file" in str(problems[0])
    _, problems = load(tmp_path, "[[accounts]\n", "accounts.toml")
    assert str(problems[0]).startswith(f"{tmp_path}/accounts.toml:1: ")


def test_fifty_thousand_accounts_are_found_through_indexes() -> None:
    # dict indexes: the directory never scans; 50,000 accounts are looked up directly
    big = AccountsDirectory(Account(f"ID-{i}", f"Customer {i}", foreign_ids=(f"f{i}",),
                                    senders=(f"@c{i}.example",)) for i in range(50_000))
    assert big.find("customer 49999")[0].id == "ID-49999"
    assert big.find_sender("x@mail.c123.example")[0].id == "ID-123"
    assert big.conflicts == []
