"""The words an answer frames runbook quotes with, per question language (detection:
:mod:`opsassist.language`)."""

from __future__ import annotations

from opsassist.language import Language, detect_language

__all__ = ["LABELS", "Language", "detect_language", "labels"]

LABELS: dict[Language, dict[str, str]] = {
    "en": {
        "impact": "Impact",
        "background": "Background",
        "confirm": "How to confirm",
        "steps": "Steps",
        "act": "What to do",
        "see_also": "Also relevant",
        "signals": "Recent signals",
        "sources": "Sources",
        "more_in": "More in the runbook:",
        "pointed": "The runbook points to **{target}** here; quoted from it:",
        "redirect": "**{title}**: its runbook only points to **{target}**, quoted below.",
        "unwritten": 'The runbook\'s {section} section is not written yet: it only says "{said}".',
        "nothing_found": (
            "No runbook in the index matches this question, so there is nothing to quote. "
            "Rephrase it with the alert name or the component, or check that the runbook exists."
        ),
        "not_covered": (
            "None of the indexed runbooks covers this question: the nearest ones share no words "
            "with it and are not close in meaning, so there is nothing to quote. Ask again with "
            "the alert name or the component, or check that a runbook for it exists."
        ),
        "weak_match": (
            "_This may not be covered by the runbooks: none of them mentions {names}, and the "
            "nearest one, quoted below, is not close in meaning. Check that it applies._"
        ),
        "quoted_note": "",
        "model_notice": "Model unavailable: the answer below is quoted from the runbooks",
        "model_summary": "In short",
        "model_dropped": "The model's summary was left out: it did not pass the checks",
        "model_partly_dropped": "Parts of the model's summary were left out: they did not pass "
        "the checks",
    },
    "ru": {
        "impact": "Влияние",
        "background": "Подробнее",
        "confirm": "Как проверить",
        "steps": "Шаги",
        "act": "Что делать",
        "see_also": "Также может относиться",
        "signals": "Свежие сигналы",
        "sources": "Источники",
        "more_in": "Подробнее в runbook:",
        "pointed": "Здесь runbook отсылает к **{target}**; цитата оттуда:",
        "redirect": "**{title}**: runbook только отсылает к **{target}**, он процитирован ниже.",
        "unwritten": "Раздел {section} в runbook ещё не написан: в нём только «{said}».",
        "nothing_found": (
            "Ни один runbook в индексе не подходит к этому вопросу, цитировать нечего. "
            "Переформулируйте вопрос с именем алерта или компонента или проверьте, что runbook "
            "существует."
        ),
        "not_covered": (
            "Ни один runbook в индексе не покрывает этот вопрос: ближайшие не имеют с ним общих "
            "слов и далеки по смыслу, цитировать нечего. Спросите ещё раз с именем алерта или "
            "компонента или проверьте, что runbook для этого существует."
        ),
        "weak_match": (
            "_Возможно, runbook об этом нет: ни в одном не упоминается {names}, а ближайший, "
            "процитированный ниже, далёк по смыслу. Проверьте, подходит ли он._"
        ),
        "quoted_note": (
            "Шаги процитированы из runbook на языке оригинала; команды и запросы приведены "
            "без изменений."
        ),
        "model_notice": "Модель недоступна: ответ ниже процитирован из runbook",
        "model_summary": "Коротко",
        "model_dropped": "Краткое резюме модели не показано: оно не прошло проверку",
        "model_partly_dropped": "Часть резюме модели не показана: она не прошла проверку",
    },
}


def labels(language: Language) -> dict[str, str]:
    return LABELS[language]
