"""A question the nearest runbook matches only weakly gets a notice, not a confident quote."""

from __future__ import annotations

from opsassist.chat.compose import compose_answer
from opsassist.chat.coverage import unknown_names, vocabulary, weak_match
from opsassist.documents import SearchHit
from opsassist.knowledge import knowledge_pack_entry
from opsassist.parsing.markdown import parse_runbook
from tests.conftest import SHIPPED_RUNBOOKS

CERT = "kubernetes/KubeletServerCertificateExpiration.md"
CRASH = "kubernetes/KubePodCrashLooping.md"
PACK = {
    source: knowledge_pack_entry(parse_runbook((SHIPPED_RUNBOOKS / source).read_text(), source))
    for source in (CERT, CRASH, "etcd/etcdNoLeader.md")
}
KNOWN = vocabulary(PACK)


def hit(source: str, cosine: float) -> SearchHit:
    return SearchHit(
        id=source, source=source, source_type="runbook", title="", section="Meaning",
        score=1.0, text="", vector_rank=1, vector_score=cosine,
    )  # fmt: skip


def test_names_no_runbook_mentions_are_products_not_everyday_words_or_runbook_terms() -> None:
    question = (
        "Monday: HashiCorp Vault on RabbitMQ nodes sealed, Kubelet and etcd fine, pods in "
        "CrashLoop and KubePodCrashLooping too, a LoopingPod. Separately, Terraform failed."
    )
    # Monday, Separately: everyday words starting a sentence; Vault: an everyday word too;
    # Kubelet, etcd, CrashLoop: the runbooks use them; LoopingPod: both of its parts
    assert unknown_names(question, KNOWN) == ["HashiCorp", "RabbitMQ", "Terraform"]
    assert unknown_names("Terraform не может взять блокировку state", KNOWN) == ["Terraform"]


def test_a_weak_match_needs_an_unknown_name_few_shared_words_and_a_low_cosine() -> None:
    vault = "HashiCorp Vault sealed itself after a node restart: how do I unseal it?"
    assert weak_match(vault, [hit(CERT, 0.26)], PACK, KNOWN, 0.34) == ["HashiCorp"]
    assert weak_match(vault, [hit(CERT, 0.40)], PACK, KNOWN, 0.34) == []  # close in meaning
    assert weak_match(vault, [hit(CERT, 0.26)], PACK, KNOWN, 0.0) == []  # setting 0: off
    crash = "my pod keeps crash looping since the Kafka upgrade, kubectl logs shows a panic"
    assert weak_match(crash, [hit(CRASH, 0.30)], PACK, KNOWN, 0.34) == []  # shares its words
    plain = "the node restarted and certificates expired"
    assert weak_match(plain, [hit(CERT, 0.20)], PACK, KNOWN, 0.34) == []  # names nothing new


def test_the_composed_answer_says_the_match_is_weak_before_quoting_the_nearest_runbook() -> None:
    hits = [hit(CERT, 0.26)]
    for language, said in [("en", "none of them mentions **HashiCorp**"), ("ru", "ни в одном")]:
        text = compose_answer(hits, PACK, language, unmatched=["HashiCorp"]).text
        first, _, rest = text.partition("\n\n")
        assert said in first and "KubeletServerCertificateExpiration" in rest
    assert "HashiCorp" not in compose_answer(hits, PACK, "en").text
