"""The crisis screen's reviewed phrases, as regular expressions per language and category.

Written against the folded text `pipeline.safety.fold` makes: lower case, Latin accents removed (so "não" is
"nao", "ölmek" is "olmek", "ß" is "ss"), Turkish "ı" as "i", Russian "ё" as "е", one kind of apostrophe, and
Arabic without diacritics or tatweel, with أ إ آ as ا, ى as ي and ة as ه. Each pattern names first-person
intent or a present danger ("I want to end my life", "my husband hits me", "I took all my pills"); figures of
speech ("this plan is killing me", "I'm dying to start", "the deadline is murder") are left out on purpose, and
negations the pattern could swallow ("I don't want to die") are excluded with look-behinds. `tests/data/
crisis_phrases.tsv` pins both directions; docs/SAFETY.md has the measured misses and false alarms.

Categories: suicide, self_harm, harm_others (intent to seriously hurt someone), abuse (the user is being hurt
by someone), medical (an emergency now).
"""

from __future__ import annotations

SUICIDE = "suicide"
SELF_HARM = "self_harm"
HARM_OTHERS = "harm_others"
ABUSE = "abuse"
MEDICAL = "medical"
CATEGORIES = (SUICIDE, SELF_HARM, HARM_OTHERS, ABUSE, MEDICAL)

_NOT_EN = r"(?<!don't )(?<!do not )(?<!never )(?<!not )"
_FAMILY_EN = (r"(?:husband|wife|partner|boyfriend|girlfriend|ex|dad|father|mom|mum|mother|stepdad|stepfather|"
              r"stepmom|brother|uncle)")

# language -> category -> patterns (searched, case-insensitive, in the folded text)
PATTERNS: dict[str, dict[str, list[str]]] = {
    "en": {
        SUICIDE: [
            r"\b(?:kill|killing|end|ending|take|taking) (?:myself|my (?:own )?life)\b",
            r"(?<!not )(?<!n't )(?<!never been )\bsuicidal\b",
            r"\b(?:commit|committing|attempt|attempted|attempting|thinking about|thoughts of|think about|considering|"
            r"contemplating|planning) suicide\b",
            r"\bsuicide (?:note|letter|plan|attempt)s?\b",
            _NOT_EN + r"\b(?:want|wanna|wish|ready|decided|deserve) to (?:die|be dead|not wake up|disappear forever)\b",
            r"\bi wish i (?:was|were|had) (?:dead|never been born)\b",
            r"\bbetter off (?:dead|without me)\b",
            r"\b(?:no|not any|don't have a|don't have any|nothing to|lost my|no more) reasons? to (?:live|keep living|"
            r"go on)\b",
            r"\b(?:don't|do not|no longer) want to (?:live|be alive|exist|keep living)\b",
            r"\b(?:don't|do not) want to be here anymore\b",
            r"\bend it all\b",
            r"\b(?:no|there's no|there is no) point (?:in |of )?(?:living|being alive|going on|my life)\b",
            r"\bdon't see the point (?:of|in) (?:living|life|being alive|anything anymore|going on)\b",
        ],
        SELF_HARM: [
            r"\b(?:want|going|need|urge|urges) to (?:hurt|harm|cut|burn|punish|injure) myself\b",
            r"\b(?:i've been|i have been|i keep|i started|i've started|i am|i'm) (?:cutting|hurting|harming|burning|punishing) "
            r"myself\b",
            r"(?<!haven't )(?<!not )(?<!stopped )\bself[- ]?harm(?:ing|ed)?\b",
            r"\b(?:been )?starv(?:e|ing) myself\b",
            r"\bmake myself (?:throw up|vomit|sick) after\b",
        ],
        HARM_OTHERS: [
            r"\b(?:want|going|gonna|plan|planning|about) to (?:kill|murder|stab|shoot|strangle|poison) (?:him|her|them|"
            r"someone|somebody|people|everyone|my " + _FAMILY_EN + r"|my (?:boss|son|daughter|kids?|child|baby|"
            r"neighbou?r|coworker))\b",
            r"\b(?:want|going|gonna) to hurt (?:someone|somebody|people|my (?:kids?|child|baby|son|daughter))\b",
        ],
        ABUSE: [
            r"\b(?:he|she|my " + _FAMILY_EN + r"|my boss) (?:hits|beats|chokes|choked|kicks|punches|punched|rapes|raped|"
            r"abuses|abused|strangles|strangled) me\b",
            r"\bi(?:'m| am| was|'ve been| have been) (?:being )?(?:abused|raped|sexually assaulted|molested)\b",
            r"\b(?:afraid|scared) (?:he|she|they)(?:'ll| will| is going to| are going to) (?:hurt|kill) me\b",
            r"\b(?:i'm|i am|i feel) not safe at home\b",
            r"\bi don't feel safe at home\b",
        ],
        MEDICAL: [
            r"\b(?:i'm|i am|i think i'm|i think i am|i might be) having a (?:heart attack|stroke|seizure)\b",
            r"\b(?:severe|crushing|really bad) (?:chest pain|pain in my chest)\b",
            r"\bi (?:can't|cannot) breathe\b(?! through)",
            r"\b(?:took|swallowed|have taken|i've taken) (?:too many|a lot of|all (?:of )?(?:my|the)|a bottle of|"
            r"a handful of) (?:pills|tablets|painkillers|sleeping pills|meds|medication)\b",
            r"\bi overdosed\b(?! on (?:coffee|caffeine|sugar|chocolate|carbs|candy))",
            r"\b(?:coughing|vomiting|throwing) up blood\b",
            r"\b(?:one side of my (?:face|body) is (?:numb|drooping)|my face is drooping)\b",
        ],
    },
    "es": {
        SUICIDE: [
            r"(?<!no )(?<!no me )\bquiero morir(?:me)?\b",
            r"\b(?:quiero|voy a|pienso en|pensando en|he pensado en|ganas de) (?:suicidarme|matarme|quitarme la vida)\b",
            r"\b(?:quitarme la vida|acabar con mi vida|terminar con mi vida)\b",
            r"\bme voy a (?:matar|suicidar)\b",
            r"\bno quiero (?:seguir )?vivir\b",
            r"\bya no quiero seguir viviendo\b",
            r"\b(?:estaria|estarian todos|estarian) mejor (?:muert[oa]|sin mi)\b",
            r"\b(?:no tengo|sin) (?:ninguna )?razon(?:es)? para vivir\b",
            r"\b(?:pensamientos|ideas) suicidas\b",
        ],
        SELF_HARM: [
            r"\b(?:quiero|voy a|ganas de|necesito) (?:hacerme dano|lastimarme|cortarme)\b",
            r"\bme (?:estoy cortando|corto los brazos|corto las munecas)\b",
            r"\bautolesion(?:es|arme)?\b",
        ],
        HARM_OTHERS: [
            r"\b(?:quiero|voy a) (?:matarlo|matarla|matarlos|apunalarlo|apunalarla|matar a (?:alguien|mi \w+|el|ella))\b",
        ],
        ABUSE: [
            r"\bmi (?:marido|esposo|esposa|pareja|novio|novia|padre|madre|padrastro|ex) me (?:pega|golpea|maltrata|viola|"
            r"ahorca|estrangula)\b",
            r"\b(?:sufro|estoy sufriendo|vivo) (?:violencia|maltrato)\b",
        ],
        MEDICAL: [
            r"\b(?:estoy teniendo|creo que tengo|creo que estoy teniendo) un (?:infarto|ataque al corazon|derrame|ictus)\b",
            r"\bno puedo respirar\b",
            r"\b(?:tome|me tome|trague|me trague) (?:muchas|demasiadas|todas las|todas mis) (?:pastillas|pildoras)\b",
            r"\b(?:fuerte|intenso) dolor en el pecho\b",
        ],
    },
    "pt": {
        SUICIDE: [
            r"(?<!nao )\bquero morrer\b",
            r"\b(?:vou|quero|penso em|pensando em|pensei em) (?:me matar|me suicidar|tirar (?:a )?minha (?:propria )?vida)\b",
            r"\b(?:tirar (?:a )?minha (?:propria )?vida|acabar com (?:a )?minha vida)\b",
            r"\bnao quero (?:mais )?viver\b",
            r"\bseria melhor (?:se eu estivesse|eu) mort[oa]\b",
            r"\bnao (?:tenho|vejo) (?:nenhum )?(?:motivo|razao|sentido) (?:para|pra) (?:viver|continuar vivendo)\b",
            r"\b(?:pensamentos|ideias) suicidas\b",
        ],
        SELF_HARM: [
            r"\b(?:quero|vou|preciso) me (?:machucar|cortar|ferir)\b",
            r"\b(?:tenho|estou) me cortado\b",
            r"\b(?:automutilacao|automutilar|autolesao)\b",
        ],
        HARM_OTHERS: [
            r"\b(?:quero|vou) (?:mata-lo|mata-la|matar (?:alguem|ele|ela|meu \w+|minha \w+|todo mundo))\b",
        ],
        ABUSE: [
            r"\b(?:meu|minha) (?:marido|esposa|namorado|namorada|pai|mae|padrasto|companheiro|companheira|ex) me (?:bate|"
            r"agride|espanca|estupra|enforca)\b",
            r"\b(?:sofro|estou sofrendo) (?:violencia|abuso)\b",
        ],
        MEDICAL: [
            r"\b(?:estou tendo|acho que estou tendo) um (?:infarto|ataque cardiaco|avc|derrame)\b",
            r"\bnao consigo respirar\b",
            r"\btomei (?:muitos|varios|todos os|muitas) (?:comprimidos|remedios|pilulas)\b",
            r"\bdor (?:muito )?forte no peito\b",
        ],
    },
    "de": {
        SUICIDE: [
            r"\bich (?:will|mochte|werde) (?:sterben|mich umbringen|mich toten|nicht mehr leben)\b",
            r"\bich bringe mich um\b",
            r"\bmir das leben (?:zu )?nehmen\b",
            r"\b(?:selbstmord|suizid)(?:gedanken|absichten|plane)\b",
            r"\b(?:denke|dachte|denken) (?:an|uber) (?:selbstmord|suizid)\b",
            r"(?<!nicht )\bsuizidal\b",
            r"\bkeinen sinn mehr (?:im leben|zu leben)\b",
            r"\bwill nicht mehr leben\b",
            r"\b(?:waren|ware) (?:alle )?besser (?:dran )?ohne mich\b",
            r"\bmein leben beenden\b",
        ],
        SELF_HARM: [
            r"\bich ritze mich\b",
            r"\b(?:will|muss|werde) mich (?:selbst )?(?:verletzen|ritzen|schneiden)\b",
            r"\bselbstverletzung\b",
        ],
        HARM_OTHERS: [
            r"\bich (?:will|werde) (?:ihn|sie|jemanden|meinen \w+|meine \w+) (?:umbringen|toten|erstechen|erschiessen)\b",
        ],
        ABUSE: [
            r"\b(?:mein|meine) (?:mann|frau|freund|freundin|partner|partnerin|vater|mutter|stiefvater|ex) (?:schlagt|"
            r"verprugelt|missbraucht|vergewaltigt|wurgt) mich\b",
            r"\bich werde (?:geschlagen|missbraucht|vergewaltigt)\b",
        ],
        MEDICAL: [
            r"\bich (?:habe|hab|glaube ich habe) (?:gerade )?einen (?:herzinfarkt|schlaganfall)\b",
            r"\bich bekomme keine luft\b",
            r"\bich kann nicht atmen\b",
            r"\b(?:zu viele|viele|alle) tabletten (?:genommen|geschluckt)\b",
            r"\bstarke (?:brustschmerzen|schmerzen in der brust)\b",
        ],
    },
    "fr": {
        SUICIDE: [
            r"\b(?:je veux|j'ai envie de) mourir\b",
            r"\b(?:je vais|je veux|j'ai envie de|je pense a) (?:me suicider|me tuer|mettre fin a mes jours)\b",
            r"\bmettre fin a (?:mes jours|ma vie)\b",
            r"\ben finir avec (?:la vie|ma vie)\b",
            r"\bje ne veux plus vivre\b",
            r"\b(?:idees|pensees) (?:suicidaires|de suicide)\b",
            r"(?<!pas )\bsuicidaire\b",
            r"\bplus aucune raison de vivre\b",
            r"\b(?:seraient|serait) mieux sans moi\b",
        ],
        SELF_HARM: [
            r"\bme (?:faire du mal|scarifier|mutiler)\b",
            r"\bje me scarifie\b",
            r"\bautomutilation\b",
        ],
        HARM_OTHERS: [
            r"\b(?:je vais|je veux) (?:le|la|les) tuer\b",
            r"\b(?:je vais|je veux) tuer (?:quelqu'un|mon \w+|ma \w+)\b",
        ],
        ABUSE: [
            r"\b(?:mon|ma) (?:mari|femme|copain|copine|conjoint|conjointe|pere|mere|beau-pere|ex) me (?:frappe|bat|viole|"
            r"etrangle)\b",
            r"\bje (?:suis|me fais) (?:battue?|frappee?|violee?)\b",
        ],
        MEDICAL: [
            r"\bje (?:fais|crois que je fais) (?:une crise cardiaque|un avc|un infarctus)\b",
            r"\bje n'arrive (?:pas|plus) a respirer\b",
            r"\bj'ai pris (?:trop de|beaucoup de|tous mes|toute la boite de) (?:medicaments|cachets|comprimes)\b",
            r"\bforte douleur (?:dans|a) la poitrine\b",
        ],
    },
    "it": {
        SUICIDE: [
            r"(?<!non )\bvoglio morire\b",
            r"\b(?:voglio|sto per|penso di) (?:uccidermi|ammazzarmi|suicidarmi|togliermi la vita)\b",
            r"\bmi voglio (?:uccidere|ammazzare)\b",
            r"\btogliermi la vita\b",
            r"\bnon voglio piu vivere\b",
            r"\bpensieri suicidi\b",
            r"\bsarebbero tutti meglio senza di me\b",
            r"\bnessun motivo per vivere\b",
        ],
        SELF_HARM: [
            r"\b(?:voglio|sto per|ho bisogno di) (?:farmi del male|tagliarmi)\b",
            r"\bmi taglio (?:le braccia|i polsi)\b",
            r"\bautolesionismo\b",
        ],
        HARM_OTHERS: [
            r"\b(?:voglio|sto per) (?:ucciderlo|ucciderla|ammazzarlo|ammazzarla|uccidere qualcuno)\b",
        ],
        ABUSE: [
            r"\b(?:mio|mia) (?:marito|moglie|ragazzo|ragazza|compagno|compagna|padre|madre|patrigno|ex) mi (?:picchia|"
            r"violenta|maltratta|strangola)\b",
            r"\b(?:subisco|sono vittima di) (?:violenza|abusi)\b",
        ],
        MEDICAL: [
            r"\b(?:sto avendo|credo di avere|penso di avere) un (?:infarto|ictus|attacco di cuore)\b",
            r"\bnon riesco a respirare\b",
            r"\bho preso (?:troppe|tante|tutte le) (?:pillole|pastiglie|compresse)\b",
            r"\bforte dolore al petto\b",
        ],
    },
    "ru": {
        SUICIDE: [
            r"(?<!не )\bхочу умереть\b",
            r"\b(?:хочу|собираюсь|думаю) (?:покончить с собой|убить себя|уйти из жизни)\b",
            r"\b(?:покончу|покончить) с собой\b",
            r"\bубью себя\b",
            r"\bне хочу (?:больше )?жить\b",
            r"\b(?:суицидальные|суицидные) мысли\b",
            r"\bдумаю о (?:суициде|самоубийстве)\b",
            r"\bвсем будет лучше без меня\b",
            r"\bнет смысла жить\b",
        ],
        SELF_HARM: [
            r"\b(?:режу|порезать|резать) себя\b",
            r"\bпричин(?:ить|яю) себе (?:вред|боль)\b",
            r"\bсамоповрежден\w*\b",
        ],
        HARM_OTHERS: [
            r"\b(?:хочу|собираюсь) (?:убить|зарезать|застрелить) (?:его|ее|кого-нибудь|кого-то|мужа|жену)\b",
        ],
        ABUSE: [
            r"\b(?:муж|жена|парень|отец|отчим|мать|партнер) (?:бьет|избивает|насилует|душит) меня\b",
            r"\bменя (?:бьет|избивает|насилует) (?:муж|парень|отец|отчим|партнер)\b",
        ],
        MEDICAL: [
            r"\b(?:у меня|кажется у меня|кажется, у меня) (?:инфаркт|инсульт|сердечный приступ)\b",
            r"\bне могу дышать\b",
            r"\b(?:выпил|выпила|наглотался|наглоталась|принял|приняла) (?:много|все|кучу) таблеток\b",
            r"\bнаглотал(?:ся|ась) таблеток\b",
            r"\bсильная боль в груди\b",
        ],
    },
    "uk": {
        SUICIDE: [
            r"(?<!не )\bхочу померти\b",
            r"\b(?:хочу|збираюся|думаю) (?:покінчити з собою|вбити себе|піти з життя)\b",
            r"\b(?:покінчу|покінчити) з собою\b",
            r"\bвб'ю себе\b",
            r"\bне хочу (?:більше )?жити\b",
            r"\bсуїцидальні думки\b",
            r"\bдумаю про (?:суїцид|самогубство)\b",
            r"\bвсім буде краще без мене\b",
            r"\bнемає сенсу жити\b",
        ],
        SELF_HARM: [
            r"\bріжу себе\b",
            r"\bзавда(?:ти|ю) собі (?:шкоди|болю)\b",
            r"\bсамоушкоджен\w*\b",
        ],
        HARM_OTHERS: [
            r"\b(?:хочу|збираюся) (?:вбити|зарізати) (?:його|її|когось|чоловіка|дружину)\b",
        ],
        ABUSE: [
            r"\b(?:чоловік|дружина|хлопець|батько|вітчим|мати|партнер) (?:б'є|ґвалтує|душить) мене\b",
            r"\bмене (?:б'є|ґвалтує) (?:чоловік|хлопець|батько|вітчим|партнер)\b",
        ],
        MEDICAL: [
            r"\b(?:у мене|здається у мене|здається, у мене) (?:інфаркт|інсульт|серцевий напад)\b",
            r"\bне можу дихати\b",
            r"\b(?:випив|випила|наковтався|наковталася|прийняв|прийняла) (?:багато|всі|купу) (?:таблеток|пігулок)\b",
            r"\bсильний біль у грудях\b",
        ],
    },
    "tr": {
        SUICIDE: [
            r"\bolmek istiyorum\b",
            r"\bkendimi oldur(?:mek istiyorum|ecegim|meyi dusunuyorum)\b",
            r"\bintihar (?:etmek istiyorum|edecegim|etmeyi dusunuyorum|dusuncelerim|dusunceleri)\b",
            r"\bcanima kiy(?:mak|acagim|mak istiyorum)\b",
            r"\byasamak istemiyorum\b",
            r"\bherkes bensiz daha iyi olur\b",
            r"\byasamak icin (?:hicbir )?sebebim (?:yok|kalmadi)\b",
            r"\bhayatima son ver(?:mek|ecegim)\b",
        ],
        SELF_HARM: [
            r"\bkendime zarar ver(?:iyorum|mek istiyorum|ecegim)\b",
            r"\bkendimi kes(?:iyorum|mek istiyorum)\b",
        ],
        HARM_OTHERS: [
            r"\b(?:onu|birini|kocami|karimi) (?:oldurecegim|oldurmek istiyorum)\b",
        ],
        ABUSE: [
            r"\b(?:kocam|karim|sevgilim|babam|annem|uvey babam|esim|partnerim) (?:beni )?(?:dovuyor|tecavuz ediyor|"
            r"bogazimi sikiyor)\b",
        ],
        MEDICAL: [
            r"\bkalp krizi geciriyorum\b",
            r"\b(?:felc|inme) geciriyorum\b",
            r"\bnefes alamiyorum\b",
            r"\b(?:cok fazla|bir suru|butun) (?:hap|ilac) (?:ictim|aldim)\b",
            r"\bgogsumde (?:siddetli|cok kotu) (?:bir )?agri\b",
        ],
    },
    # Arabic words take prefixes (و، ف، ب): no word boundary before them.
    "ar": {
        SUICIDE: [
            r"(?:اريد|بدي|ابغي|اود) (?:ان اموت|الموت|اموت)\b",
            r"(?:ساقتل|اقتل|اريد ان اقتل|اريد قتل|ابغي اقتل) نفسي\b",
            r"(?:افكر|بفكر) (?:في |ب)(?:ال)?انتحار\b",
            r"(?:اريد الانتحار|سانتحر|ساتنحر|افكار انتحاريه)",
            r"(?:انهي|انهاء|اريد انهاء) حياتي\b",
            r"لا (?:اريد|اود) (?:ان اعيش|العيش)\b",
            r"لم اعد (?:اريد|اطيق) (?:ان اعيش|العيش|الحياه)\b",
            r"الجميع (?:سيكون|سيكونون) افضل بدوني",
            r"لا (?:يوجد )?سبب (?:للعيش|لاعيش)",
        ],
        SELF_HARM: [
            r"(?:اؤذي|ايذاء|اجرح) نفسي\b",
        ],
        HARM_OTHERS: [
            r"(?:ساقتله|ساقتلها|اريد ان اقتله|اريد ان اقتلها|اريد قتله|اريد قتلها)\b",
        ],
        ABUSE: [
            r"(?:زوجي|زوجتي|ابي|والدي|امي|خطيبي|صديقي) (?:يضربني|تضربني|يعتدي علي|يغتصبني)\b",
        ],
        MEDICAL: [
            r"(?:عندي|اعاني من|اصابتني) (?:نوبه قلبيه|جلطه)",
            r"لا (?:استطيع|اقدر) (?:ان اتنفس|التنفس)",
            r"(?:اخذت|ابتلعت|بلعت) (?:الكثير من|كثير من|كل) (?:الحبوب|الادويه|حبوب)",
            r"الم (?:شديد|قوي) في (?:صدري|الصدر)",
        ],
    },
}
