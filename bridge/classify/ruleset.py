"""The loaded, validated rule set: what `classify` runs and what a reload swaps in whole.

Immutable once built. `version` is a short hash of the rule files and the accounts file, so
every classification in the audit trail can say which rule set decided it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Sequence

from bridge.classify.account_rule import AccountRule
from bridge.classify.accounts import AccountsDirectory
from bridge.classify.expect import ExpectRule
from bridge.classify.index import RuleIndex
from bridge.classify.model import DEFAULT_STATUS, DetectRule, SkipRule, StatusPhrases
from bridge.classify.problems import Problem
from bridge.classify.tool import Tool


@dataclass(frozen=True)
class RuleSet:
    """Compiled rules in precedence order, each list behind its index, and the accounts.

    `files` are the rule files read (in order), `version` the short content hash,
    `warnings` what `check` would warn about; `accounts.all()` feeds the vendor API.
    """

    files: tuple[Path, ...] = ()
    version: str = "empty"
    detect: RuleIndex[DetectRule] = field(default_factory=lambda: RuleIndex(()))
    skip: RuleIndex[SkipRule] = field(default_factory=lambda: RuleIndex(()))
    account_rules: RuleIndex[AccountRule] = field(default_factory=lambda: RuleIndex(()))
    accounts: AccountsDirectory = field(default_factory=AccountsDirectory)
    status: StatusPhrases = DEFAULT_STATUS
    accounts_file: Path | None = None
    warnings: tuple[Problem, ...] = ()
    # v2 [[tool]]s with senders, tried in order after every detect rule failed.
    tools: RuleIndex[Tool] = field(default_factory=lambda: RuleIndex(()))
    expect: tuple[ExpectRule, ...] = ()  # not indexed: a handful, tried on classified mail

    @classmethod
    def build(cls, detect: Sequence[DetectRule] = (), skip: Sequence[SkipRule] = (),
              account_rules: Sequence[AccountRule] = (), accounts: AccountsDirectory | None = None,
              status: StatusPhrases = DEFAULT_STATUS, files: tuple[Path, ...] = (),
              version: str = "built", accounts_file: Path | None = None,
              warnings: tuple[Problem, ...] = (), tools: Sequence[Tool] = (),
              expect: Sequence[ExpectRule] = ()) -> "RuleSet":
        """Assemble a rule set from compiled rules (tests, benchmarks, the loader)."""
        return cls(files=files, version=version, detect=RuleIndex(detect),
                   skip=RuleIndex(skip), account_rules=RuleIndex(account_rules),
                   accounts=accounts if accounts is not None else AccountsDirectory(),
                   status=status, accounts_file=accounts_file, warnings=warnings,
                   tools=RuleIndex([t for t in tools if t.senders]), expect=tuple(expect))

    @cached_property
    def reads_html(self) -> bool:
        """Does a rule read the HTML alternative whatever the text part says (`body =
        "html"`)? Without one, the parser converts it only for a text part that could be a
        stub, the one case `body = "auto"` reads it (bridge/parse/mime/stub.py)."""
        return any(r.body == "html" for r in self.detect.rules) or \
            any(r.body == "html" for r in self.skip.rules)

    def rule_count(self) -> int:
        return len(self.detect) + len(self.skip) + len(self.account_rules)
