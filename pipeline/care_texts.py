"""The texts of the crisis-care reply: English through the catalog (`N_` here, `_` where used), and the same texts
in the catalog's other languages as data, used while the catalog has no translation of them (so the reply is in
the user's language from the first day, catalog or not)."""

from __future__ import annotations

from pipeline.i18n import N_, _, use_locale

HEARD = {
    "suicide": N_("Thank you for telling me. It sounds like you are carrying something really painful right now, "
                  "and you deserve support with it."),
    "harm_others": N_("Thank you for telling me. It sounds like things feel overwhelming right now, and it matters "
                      "that you reached out before anyone gets hurt."),
    "abuse": N_("Thank you for telling me. No one deserves to be hurt, and what is happening is not your fault."),
    "medical": N_("This could be a medical emergency. Please get help right away."),
}
HEARD["self_harm"] = HEARD["suicide"]
NOT_A_SERVICE = N_("I'm Rein, a goal coach, not a crisis service, so I can't give you the help this needs. "
                   "These people can, right now:")
EMERGENCY_NUMBER = N_("If you or someone else is in danger now, call {number} (emergency services).")
EMERGENCY_LOCAL = N_("If you or someone else is in danger now, call your local emergency number.")
DIRECTORY = N_("A free, confidential helpline in your country: {url}")
CLOSING = N_("If you can, tell someone you trust how you are feeling. I'm here whenever you want to talk about "
             "your goals again.")
PAUSED = N_("I've paused your check-ins for the next 24 hours. Tap below if you'd like them back sooner.")
RESUME = N_("Resume check-ins")

# Catalog code -> English text -> translation. The catalog (locales/) takes precedence once it has the text.
TRANSLATIONS: dict[str, dict[str, str]] = {
    "es": {
        HEARD["suicide"]: "Gracias por contármelo. Parece que estás cargando con algo muy doloroso ahora mismo, y "
                          "mereces apoyo.",
        HEARD["harm_others"]: "Gracias por contármelo. Parece que ahora todo te supera, y es importante que hayas "
                              "hablado antes de que alguien salga herido.",
        HEARD["abuse"]: "Gracias por contármelo. Nadie merece que le hagan daño, y lo que está pasando no es tu culpa.",
        HEARD["medical"]: "Esto podría ser una emergencia médica. Busca ayuda ahora mismo, por favor.",
        NOT_A_SERVICE: "Soy Rein, un coach de objetivos, no un servicio de crisis, así que no puedo darte la ayuda "
                       "que esto necesita. Estas personas sí pueden, ahora mismo:",
        EMERGENCY_NUMBER: "Si tú u otra persona estáis en peligro ahora, llama al {number} (emergencias).",
        EMERGENCY_LOCAL: "Si tú u otra persona estáis en peligro ahora, llama al número de emergencias de tu país.",
        DIRECTORY: "Una línea de ayuda gratuita y confidencial en tu país: {url}",
        CLOSING: "Si puedes, cuéntale a alguien de confianza cómo te sientes. Aquí estaré cuando quieras volver a "
                 "hablar de tus objetivos.",
        PAUSED: "He pausado tus check-ins durante las próximas 24 horas. Toca abajo si quieres recuperarlos antes.",
        RESUME: "Reanudar check-ins",
    },
    "pt_BR": {
        HEARD["suicide"]: "Obrigado por me contar. Parece que você está carregando algo muito doloroso agora, e "
                          "merece apoio.",
        HEARD["harm_others"]: "Obrigado por me contar. Parece que tudo está pesado demais agora, e é importante que "
                              "você tenha falado antes que alguém se machuque.",
        HEARD["abuse"]: "Obrigado por me contar. Ninguém merece ser machucado, e o que está acontecendo não é culpa "
                        "sua.",
        HEARD["medical"]: "Isso pode ser uma emergência médica. Procure ajuda agora mesmo, por favor.",
        NOT_A_SERVICE: "Eu sou o Rein, um coach de metas, não um serviço de crise, então não posso dar a ajuda de que "
                       "isso precisa. Estas pessoas podem, agora mesmo:",
        EMERGENCY_NUMBER: "Se você ou outra pessoa estiver em perigo agora, ligue para {number} (emergência).",
        EMERGENCY_LOCAL: "Se você ou outra pessoa estiver em perigo agora, ligue para o número de emergência local.",
        DIRECTORY: "Uma linha de apoio gratuita e confidencial no seu país: {url}",
        CLOSING: "Se puder, conte a alguém de confiança como você está se sentindo. Estou aqui quando quiser voltar "
                 "a falar das suas metas.",
        PAUSED: "Pausei seus check-ins pelas próximas 24 horas. Toque abaixo se quiser retomá-los antes.",
        RESUME: "Retomar check-ins",
    },
    "de": {
        HEARD["suicide"]: "Danke, dass du es mir sagst. Es klingt, als würdest du gerade etwas sehr Schmerzhaftes "
                          "tragen, und du verdienst Unterstützung dabei.",
        HEARD["harm_others"]: "Danke, dass du es mir sagst. Es klingt, als würde dir gerade alles zu viel, und es ist "
                              "wichtig, dass du dich meldest, bevor jemand verletzt wird.",
        HEARD["abuse"]: "Danke, dass du es mir sagst. Niemand verdient es, verletzt zu werden, und was passiert, ist "
                        "nicht deine Schuld.",
        HEARD["medical"]: "Das könnte ein medizinischer Notfall sein. Bitte hol dir sofort Hilfe.",
        NOT_A_SERVICE: "Ich bin Rein, ein Coach für Ziele, kein Krisendienst, und kann dir nicht die Hilfe geben, die "
                       "das braucht. Diese Menschen können es, jetzt sofort:",
        EMERGENCY_NUMBER: "Wenn du oder jemand anderes jetzt in Gefahr ist, ruf {number} an (Notruf).",
        EMERGENCY_LOCAL: "Wenn du oder jemand anderes jetzt in Gefahr ist, ruf den Notruf deines Landes an.",
        DIRECTORY: "Eine kostenlose, vertrauliche Hilfe-Hotline in deinem Land: {url}",
        CLOSING: "Wenn du kannst, erzähl einem Menschen, dem du vertraust, wie es dir geht. Ich bin da, wann immer "
                 "du wieder über deine Ziele sprechen möchtest.",
        PAUSED: "Ich habe deine Check-ins für die nächsten 24 Stunden pausiert. Tippe unten, wenn du sie früher "
                "zurückhaben möchtest.",
        RESUME: "Check-ins fortsetzen",
    },
    "fr": {
        HEARD["suicide"]: "Merci de me l'avoir dit. On dirait que tu portes quelque chose de très douloureux en ce "
                          "moment, et tu mérites d'être soutenu·e.",
        HEARD["harm_others"]: "Merci de me l'avoir dit. On dirait que tout est trop lourd en ce moment, et c'est "
                              "important que tu en parles avant que quelqu'un soit blessé.",
        HEARD["abuse"]: "Merci de me l'avoir dit. Personne ne mérite d'être blessé, et ce qui se passe n'est pas ta "
                        "faute.",
        HEARD["medical"]: "Ça pourrait être une urgence médicale. Cherche de l'aide tout de suite, s'il te plaît.",
        NOT_A_SERVICE: "Je suis Rein, un coach d'objectifs, pas un service d'écoute de crise, et je ne peux pas "
                       "t'apporter l'aide qu'il faut. Ces personnes le peuvent, dès maintenant :",
        EMERGENCY_NUMBER: "Si toi ou quelqu'un d'autre êtes en danger maintenant, appelle le {number} (urgences).",
        EMERGENCY_LOCAL: "Si toi ou quelqu'un d'autre êtes en danger maintenant, appelle le numéro d'urgence de ton "
                         "pays.",
        DIRECTORY: "Une ligne d'écoute gratuite et confidentielle dans ton pays : {url}",
        CLOSING: "Si tu peux, dis à quelqu'un de confiance comment tu te sens. Je suis là quand tu voudras reparler "
                 "de tes objectifs.",
        PAUSED: "J'ai mis tes check-ins en pause pour les prochaines 24 heures. Touche ci-dessous si tu veux les "
                "reprendre plus tôt.",
        RESUME: "Reprendre les check-ins",
    },
    "it": {
        HEARD["suicide"]: "Grazie per avermelo detto. Sembra che tu stia portando qualcosa di molto doloroso in "
                          "questo momento, e meriti sostegno.",
        HEARD["harm_others"]: "Grazie per avermelo detto. Sembra che tutto sia troppo in questo momento, ed è "
                              "importante che tu ne parli prima che qualcuno si faccia male.",
        HEARD["abuse"]: "Grazie per avermelo detto. Nessuno merita di essere ferito, e quello che sta succedendo non "
                        "è colpa tua.",
        HEARD["medical"]: "Potrebbe essere un'emergenza medica. Chiedi aiuto subito, per favore.",
        NOT_A_SERVICE: "Sono Rein, un coach per gli obiettivi, non un servizio di crisi, quindi non posso darti "
                       "l'aiuto di cui c'è bisogno. Queste persone possono, adesso:",
        EMERGENCY_NUMBER: "Se tu o qualcun altro siete in pericolo adesso, chiama il {number} (emergenze).",
        EMERGENCY_LOCAL: "Se tu o qualcun altro siete in pericolo adesso, chiama il numero di emergenza del tuo paese.",
        DIRECTORY: "Una linea di ascolto gratuita e riservata nel tuo paese: {url}",
        CLOSING: "Se puoi, racconta a una persona di fiducia come ti senti. Sono qui quando vorrai tornare a parlare "
                 "dei tuoi obiettivi.",
        PAUSED: "Ho messo in pausa i tuoi check-in per le prossime 24 ore. Tocca qui sotto se li vuoi riattivare "
                "prima.",
        RESUME: "Riprendi i check-in",
    },
    "ru": {
        HEARD["suicide"]: "Спасибо, что рассказали. Похоже, сейчас вам очень больно, и вы заслуживаете поддержки.",
        HEARD["harm_others"]: "Спасибо, что рассказали. Похоже, сейчас всего слишком много, и важно, что вы "
                              "обратились, пока никто не пострадал.",
        HEARD["abuse"]: "Спасибо, что рассказали. Никто не заслуживает, чтобы ему причиняли боль, и в том, что "
                        "происходит, нет вашей вины.",
        HEARD["medical"]: "Это может быть неотложное медицинское состояние. Пожалуйста, обратитесь за помощью прямо "
                          "сейчас.",
        NOT_A_SERVICE: "Я Rein, коуч по целям, а не кризисная служба, и не могу дать ту помощь, которая сейчас нужна. "
                       "Эти люди могут, прямо сейчас:",
        EMERGENCY_NUMBER: "Если вы или кто-то другой сейчас в опасности, звоните {number} (экстренные службы).",
        EMERGENCY_LOCAL: "Если вы или кто-то другой сейчас в опасности, звоните в местную экстренную службу.",
        DIRECTORY: "Бесплатная конфиденциальная линия помощи в вашей стране: {url}",
        CLOSING: "Если можете, расскажите близкому человеку, как вы себя чувствуете. Я рядом, когда захотите снова "
                 "поговорить о своих целях.",
        PAUSED: "Я приостановил ваши check-in на ближайшие 24 часа. Нажмите ниже, если хотите вернуть их раньше.",
        RESUME: "Возобновить check-in",
    },
    "uk": {
        HEARD["suicide"]: "Дякую, що розповіли. Схоже, зараз вам дуже боляче, і ви заслуговуєте на підтримку.",
        HEARD["harm_others"]: "Дякую, що розповіли. Схоже, зараз усього забагато, і важливо, що ви звернулися, поки "
                              "ніхто не постраждав.",
        HEARD["abuse"]: "Дякую, що розповіли. Ніхто не заслуговує, щоб йому завдавали болю, і в тому, що "
                        "відбувається, немає вашої провини.",
        HEARD["medical"]: "Це може бути невідкладний медичний стан. Будь ласка, зверніться по допомогу просто зараз.",
        NOT_A_SERVICE: "Я Rein, коуч із цілей, а не кризова служба, і не можу дати ту допомогу, яка зараз потрібна. "
                       "Ці люди можуть, просто зараз:",
        EMERGENCY_NUMBER: "Якщо ви чи хтось інший зараз у небезпеці, телефонуйте {number} (екстрені служби).",
        EMERGENCY_LOCAL: "Якщо ви чи хтось інший зараз у небезпеці, телефонуйте до місцевої екстреної служби.",
        DIRECTORY: "Безкоштовна конфіденційна лінія допомоги у вашій країні: {url}",
        CLOSING: "Якщо можете, розкажіть близькій людині, як ви почуваєтеся. Я поруч, коли захочете знову поговорити "
                 "про свої цілі.",
        PAUSED: "Я призупинив ваші check-in на найближчі 24 години. Натисніть нижче, якщо хочете повернути їх "
                "раніше.",
        RESUME: "Відновити check-in",
    },
    "tr": {
        HEARD["suicide"]: "Bana anlattığın için teşekkür ederim. Şu anda çok acı veren bir şey taşıyorsun gibi "
                          "görünüyor ve desteği hak ediyorsun.",
        HEARD["harm_others"]: "Bana anlattığın için teşekkür ederim. Şu anda her şey çok ağır geliyor gibi görünüyor "
                              "ve kimse zarar görmeden önce ulaşman çok önemli.",
        HEARD["abuse"]: "Bana anlattığın için teşekkür ederim. Kimse zarar görmeyi hak etmez ve olanlar senin suçun "
                        "değil.",
        HEARD["medical"]: "Bu tıbbi bir acil durum olabilir. Lütfen hemen yardım al.",
        NOT_A_SERVICE: "Ben Rein, bir hedef koçuyum, kriz hattı değilim; bu yüzden bunun gerektirdiği yardımı "
                       "veremem. Şu kişiler şimdi yardım edebilir:",
        EMERGENCY_NUMBER: "Sen ya da bir başkası şu anda tehlikedeyse {number} numarayı ara (acil servis).",
        EMERGENCY_LOCAL: "Sen ya da bir başkası şu anda tehlikedeyse bulunduğun yerin acil numarasını ara.",
        DIRECTORY: "Ülkende ücretsiz ve gizli bir destek hattı: {url}",
        CLOSING: "Yapabilirsen, güvendiğin birine nasıl hissettiğini anlat. Hedeflerin hakkında yeniden konuşmak "
                 "istediğinde buradayım.",
        PAUSED: "Check-in'lerini önümüzdeki 24 saat için durdurdum. Daha önce geri istersen aşağıya dokun.",
        RESUME: "Check-in'leri sürdür",
    },
    "ar": {
        HEARD["suicide"]: "شكرًا لأنك أخبرتني. يبدو أنك تحمل شيئًا مؤلمًا جدًا الآن، وتستحق الدعم.",
        HEARD["harm_others"]: "شكرًا لأنك أخبرتني. يبدو أن كل شيء ثقيل جدًا الآن، ومن المهم أنك تكلمت قبل أن يتأذى "
                              "أحد.",
        HEARD["abuse"]: "شكرًا لأنك أخبرتني. لا أحد يستحق أن يتأذى، وما يحدث ليس ذنبك.",
        HEARD["medical"]: "قد تكون هذه حالة طبية طارئة. من فضلك اطلب المساعدة فورًا.",
        NOT_A_SERVICE: "أنا Rein، مدرب أهداف ولست خدمة أزمات، لذلك لا أستطيع تقديم المساعدة التي يحتاجها هذا. هؤلاء "
                       "يستطيعون، الآن:",
        EMERGENCY_NUMBER: "إذا كنت أنت أو شخص آخر في خطر الآن، اتصل بالرقم {number} (الطوارئ).",
        EMERGENCY_LOCAL: "إذا كنت أنت أو شخص آخر في خطر الآن، اتصل برقم الطوارئ في بلدك.",
        DIRECTORY: "خط مساعدة مجاني وسري في بلدك: {url}",
        CLOSING: "إن استطعت، أخبر شخصًا تثق به بما تشعر. أنا هنا متى أردت أن نعود للحديث عن أهدافك.",
        PAUSED: "أوقفت تذكيراتك مؤقتًا لمدة 24 ساعة. اضغط أدناه إذا أردت استئنافها قبل ذلك.",
        RESUME: "استئناف التذكيرات",
    },
}
CATALOG = ("en", *TRANSLATIONS)


def catalog_code(language: str | None) -> str:
    """The catalog language for a screen language or a Telegram language code ("pt-br" -> "pt_BR")."""
    base = (language or "en").replace("-", "_").split("_")[0].lower()
    code = "pt_BR" if base == "pt" else base
    return code if code in CATALOG else "en"


def say(text: str, language: str, **values: str) -> str:
    """`text` in `language`: the catalog's translation when it has one, else the one above, else English."""
    with use_locale(language):
        translated = _(text)
    if translated == text and language != "en":
        translated = TRANSLATIONS.get(language, {}).get(text, text)
    return translated.format(**values) if values else translated
