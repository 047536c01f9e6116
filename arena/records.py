"""Reading sectioned Chinese case records (病历, 考试病例): the pieces of a draft case.

`read_record` splits a record at its headings (【主诉】, "现病史：", "一、既往史"),
reads the demographics, turns each history section into `Seg`s (clauses that
become one fact: intents, subject, polarity) in the speaker's own words, and
splits the examination by body system and the tests by name. `arena.importer`
assembles the draft. Every rule is a keyword table, so the same record always
reads the same way; what the tables guess (an intent, an `abnormal` flag) is in
the draft for the author to check.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

import msgspec

from arena.intents import SUBJECT_INTENT, subjects_in

Rules = list[tuple[str, re.Pattern[str]]]  # (intent, the words that say it), first match first


class Seg:
    """Clauses that become one fact: same intents, subject and polarity."""

    def __init__(self, intents: list[str], subject: str, negative: bool, text: str) -> None:
        self.intents, self.subject, self.negative, self.texts = intents, subject, negative, [text]


_SECTION_NAMES: dict[str, tuple[str, ...]] = {
    "general": ("一般资料", "一般项目", "一般信息", "患者信息", "基本信息", "病人信息", "患儿信息",
                "一般情况"),
    "chief": ("主诉",),
    "hpi": ("现病史",),
    "past": ("既往史", "既往病史"),
    "personal": ("个人史", "社会史", "生活史"),
    "birth": ("出生史", "生长发育史", "出生及生长发育史", "喂养史", "预防接种史", "接种史"),
    "obstetric": ("婚育史", "婚姻史", "生育史", "月经史", "月经婚育史", "婚育及月经史",
                  "月经及婚育史", "婚姻生育史"),
    "family": ("家族史",),
    "exam": ("体格检查", "查体", "体检", "入院查体", "专科检查", "专科情况", "专科查体"),
    "tests": ("辅助检查", "实验室检查", "实验室及辅助检查", "实验室及其他检查", "影像学检查",
              "检查结果", "实验室及影像学检查"),
    "diagnosis": ("初步诊断", "入院诊断", "临床诊断", "诊断", "最后诊断", "出院诊断", "最终诊断",
                  "主要诊断"),
    "differential": ("鉴别诊断",),
    "other": ("诊断依据", "诊疗计划", "治疗计划", "治疗", "处理", "诊治经过", "病例分析", "分析",
              "讨论", "思考题", "治疗原则", "出院医嘱", "病史陈述者", "供史者"),
}
_KIND = {n: k for k, names in _SECTION_NAMES.items() for n in names}
_HEADING = re.compile(
    r"^\s*(?:[(（]?[一二三四五六七八九十\d]{1,2}[)）、.．]\s*)?[【\[]?\s*("
    + "|".join(sorted(map(re.escape, _KIND), key=len, reverse=True))
    + r")\s*(?:[】\]]\s*[:：]?|[:：]|\s+|$)(.*)$")


def record_sections(text: str) -> dict[str, str]:
    """The record's sections by kind (general, chief, hpi, past, ... exam, tests, diagnosis);
    text before the first heading is "preamble". Repeated kinds are joined."""
    text = re.sub(r"(?<=[^\n])(?=【)", "\n", text.replace("\r\n", "\n"))
    out: dict[str, list[str]] = {}
    kind = "preamble"
    for line in text.split("\n"):
        m = _HEADING.match(line)
        # "一般情况：神志清楚" inside the examination is a finding, not the demographics.
        if m and not (m.group(1) == "一般情况" and kind in ("exam", "tests")):
            kind = _KIND[m.group(1)]
            line = m.group(2)
        if line.strip():
            out.setdefault(kind, []).append(line.strip())
    return {k: "\n".join(v) for k, v in out.items()}


_RELATIONS = "母亲|父亲|妈妈|爸爸|奶奶|爷爷|外婆|外公|姥姥|姥爷|祖母|祖父|女儿|儿子|妻子|丈夫|家属"
_NARRATOR = re.compile(
    rf"(?:病史陈述者|供史者|病史提供者|代诉人|陈述者)\s*[:：]?\s*(?:患儿|患者)?之?({_RELATIONS})"
    rf"|由(?:患儿|患者)?之?({_RELATIONS})(?:代诉|代述|提供|陈述|诉说|叙述)")
_AGE = re.compile(r"(\d{1,3})\s*(岁|周岁|个月|月龄|月|天|日龄|日)(?:\s*(\d{1,2})\s*个?月)?")
_OCCUPATION = re.compile(
    r"退休|无业|个体|学生|农民|务农|工人|教师|老师|职员|司机|干部|会计|护士|医生|工程师|厨师|保安|"
    r"文员|销售|经理|主妇|程序员|快递|外卖|公务员|自由职业|商人|民工|保洁|服务员|在读|学龄前|"
    r"[\u4e00-\u9fff](?:员|师|工)$")
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
_GIVEN = {"male": ("建国", "志强", "海涛", "伟", "明", "俊杰", "浩然", "子轩"),
          "female": ("秀英", "丽华", "婷", "静", "晓雯", "雨桐", "欣怡", "佳怡")}


def placeholder_name(sex: str, seed: str, english: bool) -> str:
    """A fictional name for a record that gives none ("周某"), the same for the same seed."""
    h = int(hashlib.sha256(seed.encode()).hexdigest(), 16)
    if english:
        first = ("James", "Daniel", "Michael", "Sam") if sex == "male" else (
            "Emma", "Grace", "Laura", "Anna")
        return f"{first[h % 4]} {('Taylor', 'Morgan', 'Brooks', 'Carter', 'Reed')[h // 4 % 5]}"
    return _SURNAMES[h % len(_SURNAMES)] + _GIVEN[sex][h // 20 % len(_GIVEN[sex])]


def age_of(years: int, unit: str, extra_months: int | None) -> tuple[int, str]:
    """(age, age_unit) of "67岁", "8个月", "20天", "1岁3个月" (15 months: under 3 years a
    child's age is counted in months)."""
    if unit in ("天", "日龄", "日"):
        return (years, "days") if years < 90 else (years // 30, "months")
    if unit in ("个月", "月龄", "月"):
        return (years, "months") if years < 36 else (years // 12, "years")
    if years < 3 and (extra_months or years == 0):
        return years * 12 + (extra_months or 0), "months"
    return years, "years"


def sex_word(sex: str, age: int, unit: str) -> str:
    """男婴/女婴 under a year, 男孩/女孩 under 14, else 男性/女性."""
    if unit != "years" or age < 1:
        return "男婴" if sex == "male" else "女婴"
    if age < 14:
        return "男孩" if sex == "male" else "女孩"
    return "男性" if sex == "male" else "女性"


def person(demo: dict[str, str | int]) -> str:
    """"67岁男性", "15个月男婴"; "男性" alone when the age is unknown."""
    sex, age, unit = str(demo["sex"]), int(demo["age"]), str(demo["age_unit"])
    if not age and unit == "years":
        return "男性" if sex == "male" else "女性"
    return age_text(age, unit) + sex_word(sex, age, unit)


def age_text(age: int, unit: str) -> str:
    """"67岁", "15个月", "20天"."""
    return f"{age}{ {'years': '岁', 'months': '个月', 'days': '天'}[unit]}"


# Clinical third person -> the speaker's words. Order matters: longer phrases first.
_VOICE: list[tuple[str, str]] = [
    (r"(?:该|此)?(?:患者|病人|患儿|病儿)(?:自诉|自述|诉)?", "\x00"),
    (r"(\d+|[一二两三四五六七八九十半]+)(余|多)?日(?!期|龄)", r"\1\2天"),
    (r"于(?=\d|[昨今前半一二两三四五六七八九十])", ""),
    (r"无明显(?:诱因|原因)下?(?:突然|突发)?出现", "没什么原因就开始"),
    (r"无明显(?:诱因|原因)下?", "没什么原因"),
    (r"(前|后|时|起)(?:突然|突发)?出现", r"\1开始"),
    (r"突发", "突然"), (r"不伴(?:有)?", "没有"), (r"伴(?:有|随)?", "还有"),
    (r"否认", "没有"), (r"未见|未诉|并无|均无|亦无|也无", "没有"), (r"^无|(?<=[，,、])无", "没有"),
    (r"未", "没"), (r"自觉", "感觉"), (r"自行", "自己"), (r"遂", "就"), (r"给予|予以?", "给了"),
    (r"口服|服用", "吃"), (r"静滴|静脉滴注|静脉输注", "输液用"), (r"我院|本院", "这儿"),
    (r"体温最高(?:达|至)?", "体温最高到"), (r"℃|°C", "度"), (r"每日", "每天"),
    (r"\bqd\b", "每天一次"), (r"\bbid\b", "每天两次"), (r"\btid\b", "每天三次"),
    (r"症状(?:无|没)(?:明显)?(?:好转|缓解)", "没见好"),
    (r"发病以来|起病以来|病程中|患病以来", "这些天"),
    (r"既往体健|既往身体健康", "以前身体一直挺好"), (r"既往", "以前"),
    (r"体健|健在", "身体挺好"),
    (r"纳眠可", "吃饭睡觉都还行"), (r"纳差|食欲差|食欲不振|食欲减退", "胃口不好"),
    (r"纳可|食欲可", "胃口还行"), (r"眠差|睡眠差|睡眠欠佳", "睡不好"), (r"眠可|睡眠可", "睡得还行"),
    (r"(?:二便|大小便)(?:正常|如常|无异常|可)", "大小便都正常"), (r"精神可", "精神还行"),
    (r"精神差|精神欠佳|精神萎靡", "精神不好"),
    (r"体重无明显(?:变化|改变|增减)|体重无变化", "体重没什么变化"),
    (r"发热", "发烧"), (r"(?<![上下左右中])腹痛", "肚子疼"), (r"头痛", "头疼"), (r"胸痛", "胸口疼"),
    (r"畏寒", "怕冷"), (r"(?<!打)寒战", "打寒战"), (r"乏力", "没力气"), (r"咯血", "咳血"),
    (r"气促", "气短"), (r"心悸", "心慌"), (r"腹泻", "拉肚子"), (r"黑便", "大便发黑"),
    (r"吸烟", "抽烟"), (r"饮酒", "喝酒"), (r"末次月经|LMP", "上次月经"),
    (r"家中", "家里"), (r"自服", "自己吃了"), (r"史(?=$|[，,。；;])", ""),
]
_VOICE_RE = [(re.compile(p, re.IGNORECASE), r) for p, r in _VOICE]
_MENARCHE = re.compile(r"(\d{1,2})\s*岁\s*初潮|初潮\s*(\d{1,2})\s*岁")
_MENSES = re.compile(r"(?<![\d/])(\d+(?:[-~～]\d+)?)\s*天?\s*/\s*(\d+(?:[-~～]\d+)?)\s*天")
_KIN = re.compile(r"其(父亲|母亲|配偶|爱人|丈夫|妻子|父|母|兄|姐|弟|妹|子|女|妻)")
_GP = re.compile(r"G(\d)\s*P(\d)|孕(\d)产(\d)")


def voice(text: str, narrator: str) -> str:
    """Clinical third person -> the speaker's first person (or a parent's words)."""
    def gp(m: re.Match[str]) -> str:
        g, p = m.group(1) or m.group(3), m.group(2) or m.group(4)
        return f"孩子是第{g}胎第{p}产" if narrator else f"怀孕{g}次，生了{p}次"

    text = _GP.sub(gp, text)
    if re.search(r"月经|初潮|经期", text):
        text = _MENARCHE.sub(lambda m: f"{m.group(1) or m.group(2)}岁来的月经", text)
        text = _MENSES.sub(r"每次\1天，\2天来一次", text)
    for rx, rep in _VOICE_RE:
        text = rx.sub(rep, text)

    def kin(m: re.Match[str]) -> str:
        who = {"父": "父亲", "母": "母亲", "妻": "妻子"}.get(m.group(1), m.group(1))
        return "我" if who == narrator else ("孩子" if narrator else "我") + who

    text = _KIN.sub(kin, text)
    text = text.replace("\x00", "孩子" if narrator else "我")
    return re.sub(r"我我", "我", text)


_NEG = re.compile(
    r"^(?:伴|并|且|亦|也|均|另)?(?:否认|无|未见|未诉|未(?!戒)|没有|不伴有?|并无|从未|从不|不)")
# In the 现病史 a bare 不 qualifies ("不易咳出"), it does not deny a symptom.
_NEG_HPI = re.compile(r"^(?:伴|并|且|亦|也|均|另)?(?:否认|无|未见|未诉|未|没有|不伴有?|并无|从未)")
_STRONG_NEG = re.compile(r"^(?:否认|无|没有|从未|从不|不)")
_HEALTHY = re.compile(r"体健|身体健康|健在|无特殊|无殊")
_ADMIN = re.compile(
    r"(?:来|至|到|就诊于|收入|收住|收治)(?:我院|本院|我科|本科)|为(?:求|进一步)|门诊以|拟.{0,12}收")
_PREFIX_ONLY = re.compile(r"^(?:自|此次)?(?:发病|起病|患病|病来)以来$|^病程中$|^近来$")

_HPI_RULES: Rules = [(i, re.compile(p)) for i, p in (
    ("treatment_so_far", r"就诊|诊所|卫生院|医院|门诊|急诊|给予|予|口服|服用|服药|用药|输液|静滴|"
                         r"治疗|诊断为|考虑|自服|自行|检查示|查血"),
    ("radiation", r"放射|放散|牵涉|向.{1,8}(?:肩|背|臂|腰|会阴|大腿|颈|下颌|腹股沟)"),
    ("aggravating", r"(?:时|后|活动|进食|咳嗽|吸气|平卧|劳累|按压|弯腰|排尿)[^，,。]{0,4}"
                    r"(?:加重|加剧|明显)"),
    ("relieving", r"(?:休息|坐起|前倾|蜷|服药|含服|吐后|排便后|进食后|停止)[^，,。]{0,6}"
                  r"(?:缓解|减轻|好转|消失)|可(?:自行)?缓解"),
    ("severity", r"剧烈|剧痛|难以忍受|评分|\d+\s*分|严重|轻度|中度|重度|影响(?:睡眠|活动|工作)|"
                 r"不能(?:平卧|行走|入睡)|最高|达\d"),
    ("character", r"绞痛|胀痛|刺痛|钝痛|隐痛|压榨|烧灼|闷痛|撕裂|刀割|针刺|酸痛|跳痛|搏动性|"
                  r"性质|样痛|紧缩|痉挛|黄色|白色|绿色|脓|铁锈|血丝|泡沫|水样|黏液|粘液|果酱|咖啡|喷射|"
                  r"量约|量多|量少"),
    ("site", r"部位|位于|[左右中上下](?:上|下)?(?:腹|胸|肢|背)|脐周|剑突下|胸骨后|心前区|全腹|"
             r"前额|枕部|颞部"),
    ("timing", r"阵发|持续|间断|间歇|每次|每天|每日|次/|一天.{0,4}次|夜间|晨起|发作"),
    ("course", r"逐渐|进行性|渐加重|较前|加重|好转|反复|越来越|减轻"),
    ("onset", r"\d+\s*(?:小时|天|日|周|个?月|年|h)[余多]?前|昨[天日晚]|今[天日晨]|前天|半夜|凌晨|"
              r"起病|突然|突发|诱因|受凉|饱餐|劳累后|着凉|淋雨|外伤后"),
)]
_GENERAL_RULES: Rules = [(i, re.compile(p)) for i, p in (
    ("appetite_weight", r"食欲|纳差|纳可|纳眠|胃口|体重|消瘦|吃奶|进食少|进食差|精神"),
    ("sleep", r"睡眠|眠|失眠|入睡"),
    ("bowel", r"大便|排便|便秘|腹泻|黑便|便血|稀便|大小便|二便"),
    ("urination", r"小便|排尿|尿量|尿色|尿频|尿急|尿痛|大小便|二便|尿布|尿不湿"),
)]
_PAST_RULES: Rules = [(i, re.compile(p)) for i, p in (
    ("allergies", r"过敏"), ("surgery", r"手术|术后|切除术|开刀|剖宫产"),
    ("trauma", r"外伤|骨折|车祸"),
    ("transfusion", r"输血"), ("vaccination", r"预防接种|疫苗|接种"),
    ("medications", r"服用|口服|规律服|服药|用药|注射|胰岛素|\d+\s*mg|\bqd\b|\bbid\b|\btid\b"),
    ("birth_development", r"足月|早产|顺产|出生|生长发育|窒息|[GP]\d|胎"),
    ("diet", r"喂养|母乳|奶粉|辅食"),
)]
_PERSONAL_RULES: Rules = [(i, re.compile(p)) for i, p in (
    ("smoking", r"吸烟|抽烟|烟"), ("alcohol", r"饮酒|喝酒|酒"),
    ("occupation_exposure", r"粉尘|毒物|放射|化学|职业|工作环境|矿|石棉|农药|工作"),
    ("travel", r"疫区|旅居|外地|出差|旅游|旅行|去过"),
    ("contacts", r"(?<!物)接触|禽|动物|宠物|类似病|传染病人|生食|疫水"),
    ("sexual_history", r"冶游|性生活|性伴"), ("diet", r"饮食|喂养|母乳|奶粉|辅食|偏食|素食"),
    ("residence", r"生于|久居|原籍|居住|出生于|长期居住"),
    ("living_situation", r"独居|同住|家庭|经济|医保|已婚|未婚|离异|丧偶|配偶|爱人|子女|育有"),
    ("sleep", r"睡眠|作息"), ("vaccination", r"预防接种|疫苗|接种"),
    ("birth_development", r"足月|早产|顺产|出生体重|生长发育|窒息"),
)]
_OBSTETRIC_RULES: Rules = [(i, re.compile(p)) for i, p in (
    ("menstrual", r"月经|初潮|经期|周期|末次|LMP|痛经|绝经|\d+\s*/\s*\d+"),
    ("obstetric", r"孕|产|G\d|流产|分娩|避孕|育有|生育"),
    ("living_situation", r"婚|配偶|爱人|子女|丈夫|妻子"),
)]


def clauses(text: str) -> list[str]:
    """`text` cut at sentence ends and commas (not inside brackets): the unit a rule reads."""
    out = []
    for sentence in re.split(r"[。；;！!？?\n]", text):
        out += [c.strip() for c in re.split(r"[，,](?![^（(]*[)）])", sentence) if c.strip()]
    return out


def _items(body: str) -> list[str]:
    body = re.sub(r"(?:等)?(?:病史|史|症状|表现|不适|情况)$", "", body)
    return [x.strip() for x in re.split(r"[、/]|及|和|或|以及", body) if x.strip()]


def subject_of(text: str) -> str:
    """The first symptom `text` names; "咳黄痰" is about the sputum, not the cough."""
    found = subjects_in(text)
    if len(found) > 1 and found[0] == ("咳嗽", "咳") and "咳痰" in dict(found):
        return "咳痰"
    return found[0][0] if found else ""


_ONSET_TIME = re.compile(r"\d+\s*(?:小时|天|日|周|个?月|年|h)[余多]?前|昨[天日晚]|今[天日晨]|前天|"
                         r"半夜|凌晨|起病|突然|突发")


def hpi_segments(text: str, main: str) -> list[Seg]:
    """现病史 clauses -> facts: onset and its modifiers, associated symptoms (each negative
    one on its own, so "有没有咯血" finds it), course, treatment and the general state."""
    segs: list[Seg] = []
    prefix = ""
    for clause in clauses(text):
        if _PREFIX_ONLY.match(clause):
            prefix = clause + "，"
            continue
        if _ADMIN.search(clause) and not re.search(r"给予|予|诊断|示", clause):
            continue
        clause, prefix = prefix + clause, ""
        last = segs[-1] if segs else None
        current = next((s.subject for s in reversed(segs) if s.subject), main)
        neg = bool(_NEG_HPI.match(clause))
        named = [c for c, _ in subjects_in(clause)]
        symptoms = [c for c in named if c not in SUBJECT_INTENT]  # 大便, 睡眠 are areas
        found = [i for i, rx in _HPI_RULES if rx.search(clause)]
        if "onset" in found and _ONSET_TIME.search(clause):
            found.remove("onset")
            found.insert(0, "onset")  # "3天前…出现…胀痛": when it began, first
        intents = [i for i in found if i != "course"][:3] or found[:1]
        if "course" in found and re.search(r"上述|症状|病情", clause):
            intents = ["course"]  # "1天前上述症状加重": how the illness went, not a new start
        if last and last.intents[0] == "treatment_so_far" and re.search(
                r"好转|缓解|无效|效果|改善|减轻|未愈|不愈", clause):
            last.texts.append(clause)
            continue
        if (re.match(r"^(?:伴|并|且|同时|还)", clause) or neg) and symptoms and (
                not intents or neg):
            body = re.sub(r"^(?:伴|并|且|同时|还)?(?:有|出现|偶有)?", "", _NEG_HPI.sub("", clause))
            groups: dict[str, list[str]] = {}
            for item in _items(body):
                groups.setdefault(subject_of(item) or item, []).append(item)
            for subject, items in groups.items():
                segs.append(Seg(["associated"], subject, neg,
                                ("没有" if neg else "还有") + "、".join(items)))
            continue
        general = [i for i, rx in _GENERAL_RULES if rx.search(clause)]
        if general and not symptoms and intents[:1] in ([], ["course"]):
            healthy = re.search(r"正常|如常|可$|无异常|无明显变化", clause)
            segs.append(Seg(general, "", neg or bool(healthy), clause))
            continue
        if last and last.intents[0] == "associated" and not (last.negative or neg or symptoms) \
                and intents and intents[0] in ("character", "timing", "severity", "site"):
            last.texts.append(clause)  # "咳黄色脓痰，量约每日30ml": one symptom, described
            last.intents += [i for i in intents if i not in last.intents]
            continue
        if not intents:
            if last and (not symptoms or symptoms[0] == current):
                last.texts.append(clause)
                continue
            intents = ["associated" if segs else "onset"]
        if symptoms and segs and intents[0] not in ("onset", "treatment_so_far", "associated") \
                and subject_of(clause) not in {x.subject for x in segs}:
            intents = ["associated", *intents][:3]  # "咳黄色脓痰": first word of the sputum
        if intents[0] == "treatment_so_far" or (intents == ["course"] and not symptoms):
            subject = ""
        elif intents[0] in ("aggravating", "relieving"):  # "咳嗽时加重": 咳嗽 is the trigger
            subject = main if main in symptoms else current
        else:
            subject = subject_of(clause) if symptoms else current
        segs.append(Seg(intents, subject, neg, clause))
    first = next((s for s in segs if s.intents[0] == "onset"), None)
    if first and not any("duration" in s.intents for s in segs):
        first.intents.append("duration")
    return segs


def section_segments(text: str, rules: Rules, default: str, pediatric: bool = False) -> list[Seg]:
    """Any history section other than the 现病史: each clause to the intents its words name,
    a clause that names none continuing the one before it."""
    segs: list[Seg] = []
    for clause in clauses(text):
        intents = [i for i, rx in rules if rx.search(clause)]
        if pediatric and "obstetric" in intents:
            intents = ["birth_development"]
        if "occupation_exposure" in intents and "contacts" in intents:
            intents.remove("contacts")
        neg = bool(_NEG.match(clause) or _HEALTHY.search(clause))
        # "未诊治" qualifies the clause before it; "否认…" is a statement of its own.
        if not intents and segs and not (neg and (_STRONG_NEG.match(clause) or not
                                                  segs[-1].negative)):
            segs[-1].texts.append(clause)
            continue
        segs.append(Seg(intents or [default], "", neg, clause))
    return segs


VITALS_ZH = {
    "temperature_c": r"(?:(?<![A-Za-z])T|体温)\s*[:：]?\s*(\d{2}(?:\.\d+)?)\s*(?:℃|°C|度)?",
    "heart_rate": r"(?:(?<![A-Za-z])(?:P|HR)(?![A-Za-z])|脉搏|心率)\s*[:：]?\s*(\d{2,3})",
    "respiratory_rate":
        r"(?:(?<![A-Za-z])R{1,2}(?![A-Za-z])|呼吸(?:频率)?)\s*[:：]?\s*(\d{1,2})\s*次",
    "bp": r"(?:BP|血压)\s*[:：]?\s*(\d{2,3})\s*/\s*(\d{2,3})",
    "spo2": r"(?:SpO2|SpO₂|SaO2|血氧饱和度|指脉氧|血氧)\s*[:：]?\s*(\d{2,3})\s*%",
    "weight_kg": r"体重\s*[:：]?\s*(\d+(?:\.\d+)?)\s*(?:kg|公斤|千克)",
}
_VITAL_TOKEN = re.compile(
    r"(?:(?<![A-Za-z])(?:T|P|R|BP|HR|RR|SpO2)(?![A-Za-z])|体温|脉搏|呼吸|血压|血氧饱和度|体重)"
    r"\s*[:：]?\s*\d[\d./]*\s*(?:℃|°C|度|次/分|次/min|bpm|mmHg|%|kg|公斤)?")


def read_vitals(texts: Iterable[str], patterns: dict[str, str]) -> dict[str, float]:
    """Vital signs by field name, the first text that gives one winning; °F becomes °C."""
    out: dict[str, float] = {}
    for text in texts:
        for name, p in patterns.items():
            m = re.search(p, text, re.IGNORECASE)
            if not m or (name in out or (name == "bp" and "systolic_bp" in out)):
                continue
            if name == "bp":
                out["systolic_bp"], out["diastolic_bp"] = float(m.group(1)), float(m.group(2))
            else:
                out[name] = float(m.group(1))
    if out.get("temperature_c", 0) > 50:  # Fahrenheit
        out["temperature_c"] = round((out["temperature_c"] - 32) * 5 / 9, 1)
    return out


Lexicon = list[tuple[str, tuple[str, ...], re.Pattern[str]]]  # name, aliases, what names it
_SYSTEMS: Lexicon = [(n, a, re.compile(p)) for n, a, p in (
    ("神经系统检查", ("神经系统查体", "神经查体", "病理征"),
     r"神经|病理征|病理反射|巴[氏宾]|Babinski|克[氏尼]|Kernig|布[氏鲁]|脑膜刺激|颈抵抗|颈强直|肌力|"
     r"肌张力|腱反射|生理反射|共济|指鼻|感觉"),
    ("妇科检查", ("妇检", "盆腔检查", "双合诊"),
     r"妇科|外阴|阴道|宫颈|子宫|附件|双合诊|三合诊|后穹"),
    ("直肠指检", ("肛门指检", "肛诊", "肛门直肠检查"), r"肛门|直肠|指检|指套"),
    ("皮肤黏膜及淋巴结", ("皮肤检查", "淋巴结检查", "看皮肤"),
     r"皮肤|黏膜|粘膜|巩膜|黄染|皮疹|出血点|瘀斑|紫癜|淋巴结|发绀|紫绀|蜘蛛痣|肝掌"),
    ("腹部检查", ("腹部查体", "腹部触诊", "查腹部", "摸肚子"),
     r"腹|肝|脾|胆囊|墨菲|Murphy|麦氏|McBurney|肠鸣音|移动性浊音|肾区|剑突|反跳痛|肌紧张|包块|"
     r"膀胱|输尿管|肠型|蠕动波"),
    ("心脏检查", ("心脏听诊", "心脏查体", "听心脏"), r"心|杂音|奔马律|瓣膜"),
    ("胸部及肺部检查", ("肺部听诊", "胸部查体", "听诊双肺", "听肺"),
     r"胸|肺|呼吸音|啰音|哮鸣音|语颤|叩诊|三凹"),
    ("头颈部检查", ("颈部检查", "咽部检查", "五官检查"),
     r"头颅|头部|眼|瞳孔|结膜|耳|鼻|口唇|口腔|咽|扁桃体|颈|甲状腺|气管|囟"),
    ("脊柱四肢", ("四肢检查", "关节检查", "下肢检查"),
     r"四肢|肢|水肿|关节|脊柱|杵状指|足背动脉|肌肉"),
    ("一般情况", ("一般检查", "望诊"), r"神志|神清|意识|精神|发育|营养|病容|面容|表情|体位|步态|"
     r"反应|哭声|查体合作|脱水|面色"),
)]
_ABNORMAL_ZH = re.compile(
    r"压痛|反跳痛|肌紧张|啰音|哮鸣音|杂音|黄染|水肿|肿大|增大|包块|肿块|[(（]\+[)）]|阳性|减弱|消失|"
    r"亢进|浊音|实音|病容|痛苦|苍白|发绀|紫绀|充血|肿胀|触痛|叩击痛|抵抗|凹陷|膨隆|出血点|皮疹|"
    r"瘀斑|奔马律|不齐|偏斜|受限|降低|升高|增高|偏高|偏低|减低|异常|增快|萎靡|嗜睡|昏迷|烦躁|脱水|"
    r"干燥|强迫体位|被动体位|蜷|颈强直|扩大|呼吸音粗|粗糙|震颤|破溃|波动感|隆起|胃肠型|蠕动波|"
    r"[↑↓]|阴影|密度增高|低密度|高密度|结石|积液|积气|占位|狭窄|梗死|梗塞|出血|骨折|抬高|压低|"
    r"倒置|扩张|增厚|闭塞|穿孔|游离气体|气液平|实变|渗出|斑片|结节|团块|淤积|同心圆|靶环|核左移|"
    r"心动过速|早搏|房颤|Q波")
_NEGATOR_ZH = re.compile(r"无|未|不|没有|否认|排除")
_NEGATED_AFTER = re.compile(r"^[^，,。；;]{0,4}?(?:[(（][-－][)）]|阴性|未引出|未见)")
# Lab values a teacher expects to be flagged: (name pattern, low, high), units as 病历 write them.
_VALUE = r"\s*[:：]?\s*(\d+(?:\.\d+)?)"
_RANGES = [(re.compile(p + _VALUE, re.IGNORECASE), lo, hi) for p, lo, hi in (
    (r"(?:WBC|白细胞(?:计数)?)", 3.5, 9.5), (r"(?:Hb|血红蛋白|Hemoglobin)", 110, 175),
    (r"(?:PLT|血小板(?:计数)?|Platelets?)", 100, 350), (r"(?:CRP|C反应蛋白)", 0, 10),
    (r"(?:PCT|降钙素原)", 0, 0.5), (r"(?:K\+?|血钾|Potassium)", 3.5, 5.5),
    (r"(?:Na\+?|血钠|Sodium)", 135, 145), (r"(?:中性粒细胞(?:百分比|比例)?|NEUT%?|N%)", 40, 75),
)]


def abnormal(text: str, cues: re.Pattern[str], negator: re.Pattern[str]) -> bool:
    """A guess: some clause names a finding not negated before it ("无压痛") or after ("(-)")."""
    for clause in re.split(r"[，,。；;]", text):
        for m in cues.finditer(clause):
            before = clause[: m.start()]
            if not negator.search(before) and not _NEGATED_AFTER.match(clause[m.end():]):
                return True
    for rx, lo, hi in _RANGES:
        for m in rx.finditer(text):
            v = float(m.group(1))
            if rx.pattern.startswith("(?:Hb") and v < 25:  # g/dL
                v *= 10
            if rx.pattern.startswith("(?:WBC") and v > 1000:  # per microlitre
                v /= 1000
            if not lo <= v <= hi:
                return True
    return False


Finding = tuple[str, tuple[str, ...], str, bool]  # name, aliases, result, abnormal (a guess)


def exam_findings(text: str) -> tuple[list[Finding], list[str]]:
    """体格检查 by body system, in a fixed order; and the general findings (the appearance)."""
    text = _VITAL_TOKEN.sub("", text)
    found: dict[str, list[str]] = {}
    system = ""
    for clause in clauses(text):
        if re.match(r"^[^：:，,]{1,8}[：:]", clause):  # "腹部：" sub-headings
            clause = re.sub(r"^[^：:]{1,8}[：:]\s*", "", clause)
        if not clause or re.fullmatch(r"[\s\d./次分mmHg%℃]*", clause):
            continue
        if clause.startswith("心肺"):  # "心肺未见异常" answers both
            found.setdefault("胸部及肺部检查", []).append(clause)
        hit = next((n for n, _, rx in _SYSTEMS if rx.search(clause)), "")
        system = hit or system or "一般情况"
        found.setdefault(system, []).append(clause)
    out = []
    for name, aliases, _ in _SYSTEMS:
        if name in found:
            result = "，".join(found[name]) + "。"
            out.append((name, aliases, result, abnormal(result, _ABNORMAL_ZH, _NEGATOR_ZH)))
    return out, found.get("一般情况", [])


_TESTS: Lexicon = [(n, a, re.compile(p, re.I)) for n, a, p in (
    ("超声心动图", ("心脏彩超", "心超"), r"超声心动图|心脏彩超|心脏超声|心超"),
    ("泌尿系超声", ("泌尿系B超", "泌尿系彩超"), r"泌尿系"),
    ("妇科超声", ("盆腔超声", "妇科B超", "经阴道超声"),
     r"妇科(?:B超|超声|彩超)|盆腔(?:B超|超声)|经阴道|子宫附件"),
    ("腹部超声", ("腹部B超", "腹部彩超", "B超"), r"腹部?(?:B超|彩超|超声)|肝胆胰脾|B超|彩超"),
    ("血常规", ("血象", "CBC", "全血细胞计数"), r"血常规|血象|CBC|全血细胞"),
    ("尿常规", ("尿检", "尿液分析"), r"尿常规|尿液分析|尿检"),
    ("大便常规", ("粪常规", "便常规", "大便潜血"), r"大便常规|粪常规|便常规|粪便|潜血|隐血"),
    ("C反应蛋白", ("CRP", "超敏C反应蛋白"), r"C反应蛋白|CRP"),
    ("降钙素原", ("PCT",), r"降钙素原|PCT"),
    ("心肌损伤标志物", ("心肌酶", "肌钙蛋白", "cTnI", "CK-MB"),
     r"心肌酶|肌钙蛋白|cTn|CK-?MB|心肌.{0,2}标志物"),
    ("BNP", ("NT-proBNP", "脑钠肽"), r"BNP|脑钠肽"),
    ("D-二聚体", ("D二聚体",), r"D-?二聚体"),
    ("凝血功能", ("凝血四项",), r"凝血"),
    ("血淀粉酶", ("淀粉酶", "脂肪酶"), r"淀粉酶|脂肪酶"),
    ("hCG", ("妊娠试验", "血hCG", "尿hCG", "验孕"), r"hCG|妊娠试验"),
    ("糖化血红蛋白", ("HbA1c",), r"糖化血红蛋白|HbA1c"),
    ("甲状腺功能", ("甲功", "TSH"), r"甲状腺功能|甲功|TSH|FT3|FT4"),
    ("肝功能", ("肝功", "转氨酶"), r"肝功"), ("肾功能", ("肾功", "肌酐", "尿素氮"), r"肾功"),
    ("电解质", ("血钾", "血钠"), r"电解质"), ("血生化", ("生化", "生化全套"), r"生化"),
    ("血糖", ("指尖血糖", "随机血糖", "空腹血糖"), r"血糖"),
    ("血气分析", ("动脉血气", "血气"), r"血气"),
    ("心电图", ("ECG", "EKG"), r"心电图|ECG|EKG"),
    ("胸部X线", ("胸片", "X线胸片", "胸部正位片"), r"胸片|胸部X线|胸部正位|X线胸片|胸部DR"),
    ("胸部CT", ("肺部CT", "胸部CT平扫"), r"胸部CT|肺部?CT|胸部增强CT"),
    ("腹部X线", ("腹平片", "立位腹平片"), r"腹(?:部)?(?:立位)?平片|腹部X线|立位腹"),
    ("腹部CT", ("全腹CT", "上腹部CT"), r"腹部?CT|全腹CT|腹盆"),
    ("头颅CT", ("头部CT", "颅脑CT"), r"头颅?CT|颅脑CT|头部CT"),
    ("头颅MRI", ("头部核磁", "颅脑MRI"), r"头颅?MRI|颅脑MRI|头颅?核磁"),
    ("腰椎穿刺", ("脑脊液检查", "腰穿"), r"腰穿|腰椎穿刺|脑脊液"),
    ("血培养", (), r"血培养"), ("痰培养", ("痰涂片",), r"痰(?:培养|涂片)"),
    ("胃镜", ("电子胃镜",), r"胃镜"), ("结肠镜", ("肠镜",), r"肠镜"),
)]
_TEST_LABEL = re.compile(
    r"^(?:\d{1,2}[.、．)]\s*)?(?:入院后|急诊|门诊|本院|外院)?(?:急查|查|行)?\s*"
    r"([^：:，,。]{1,24}?)\s*(?:[:：]|检查示|结果示|提示|显示|示)\s*(.+)$")


def results_of_tests(text: str) -> list[Finding]:
    """辅助检查, one test a sentence ("血常规：WBC ..."), named from a lexicon when known."""
    out: list[Finding] = []
    for sentence in (s.strip() for s in re.split(r"[。；;\n]", text) if s.strip()):
        m = _TEST_LABEL.match(sentence)
        label, result = (m.group(1).strip(), m.group(2).strip()) if m else ("", sentence)
        known = next(((n, a) for n, a, rx in _TESTS if rx.search(label or sentence[:12])), None)
        if known:
            name, aliases = known[0], (*known[1], label) if label else known[1]
        elif label:
            name, aliases = label, ()
        else:
            name, aliases = re.split(r"[\s\d:：]", sentence, maxsplit=1)[0] or sentence[:8], ()
        result = result.rstrip("。") + "。"
        out.append((name, aliases, result, abnormal(result, _ABNORMAL_ZH, _NEGATOR_ZH)))
    return out


_NUMBERED = re.compile(r"(?:^|(?<=[\s；;。]))(?:\d{1,2}[.、．)）]|[（(]\d{1,2}[)）]|[①-⑩])\s*")


def diagnoses(text: str) -> list[str]:
    """The items of a 诊断 section, numbered ("1.", "（2）", "③") or one a line, in order."""
    items = []
    for line in re.split(r"[\n；;]", _NUMBERED.sub("\n", text)):
        line = re.sub(r"^与|(?:相)?鉴别$|[？?。]$", "", line.strip()).strip()
        if line:
            items.append(line)
    return items


def differentials(text: str) -> list[str]:
    """The names a 鉴别诊断 section weighs: each item's head ("1. 肺结核：多有低热…") or the
    list in "与A、B相鉴别"."""
    names: list[str] = []
    for item in diagnoses(text):
        head = re.split(r"[:：，,。]", item, maxsplit=1)[0]
        head = re.sub(r"^与|(?:相)?鉴别$|[（(][^)）]*$", "", head).strip()
        names += [x.strip() for x in head.split("、") if x.strip()] if "、" in head else [head]
    return [n for n in names if 1 < len(n) <= 30]


Problem = tuple[str, str, str]  # JSON path, Chinese, English


class Record(msgspec.Struct, kw_only=True):
    """What a record says, read into a case's terms; `problems` name what it lacks."""

    sections: dict[str, str]
    demographics: dict[str, str | int]
    narrator: str  # the relative telling the history, or ""
    chief_complaint: str
    statement: str
    appearance: str
    segs: list[Seg]
    exams: list[Finding]
    tests: list[Finding]
    vitals: dict[str, float]
    diagnoses: list[str]
    differentials: list[str]
    department: str  # 科别, when the record names it
    problems: list[Problem]


def _who(sec: dict[str, str], text: str, seed: str, p: list[Problem]) -> dict[str, str | int]:
    who = sec.get("general", "") + "\n" + sec.get("preamble", "")
    first = " ".join(clauses(sec.get("hpi", ""))[:1])
    sex_m = (re.search(r"性别\s*[:：]?\s*(男|女)", who)
             or re.search(r"(?:^|[，,、\s：:])(男|女)(?:性|孩|童|婴|患儿)?(?=[，,、\s。；;]|\d|$)",
                          who)
             or re.search(r"(男|女)(?:性|孩|婴|患儿|，|,)", first or text[:200]))
    sex = {"男": "male", "女": "female"}[sex_m.group(1)] if sex_m else (
        "female" if "月经" in text else "")
    if not sex:
        sex = "male"
        p.append(("$.demographics.sex", "病历未写性别，草稿为 male",
                  "not found; the draft says male"))
    age_m = (re.search(r"年龄\s*[:：]?\s*" + _AGE.pattern, who) or _AGE.search(who)
             or re.search(r"(\d{1,3})\s*(岁)()", first))
    age, unit = 0, "years"
    if age_m:
        age, unit = age_of(int(age_m.group(1)), age_m.group(2),
                           int(age_m.group(3)) if age_m.group(3) else None)
    else:
        p.append(("$.demographics.age", "病历未写年龄", "not found"))
    name_m = re.search(r"姓名\s*[:：]\s*([^\s,，;；。、]{1,8})", who)
    name = name_m.group(1) if name_m and not re.search(r"某|[Xx×*＊]", name_m.group(1)) else ""
    if not name:
        name = placeholder_name(sex, seed, english=False)
        p.append(("$.demographics.name", f"病历未给出可用的姓名，占位为“{name}”",
                  "a placeholder name; choose a fictional one"))
    occ_m = re.search(r"职业\s*[:：]\s*([^\s,，;；。、]{1,12})", who)
    occupation = occ_m.group(1) if occ_m else next(
        (t for t in re.split(r"[，,、；;\s。]", who) if _OCCUPATION.search(t) and len(t) <= 12), "")
    return {"name": name, "sex": sex, "age": age, "age_unit": unit, "occupation": occupation}


def read_record(text: str, seed: str) -> Record:
    """Read a sectioned record. `seed` picks placeholders (a name) deterministically."""
    p: list[Problem] = []
    sec = record_sections(text)
    m = _NARRATOR.search(text)
    narrator = {"妈妈": "母亲", "爸爸": "父亲"}.get(m.group(1) or m.group(2), m.group(1) or
                                                 m.group(2)) if m else ""
    if not narrator and "患儿" in text:
        narrator = "母亲"
        p.append(("$.narrator.relation", "病历称“患儿”但未写病史陈述者，草稿假定为母亲",
                  "a child's record with no narrator named; the draft assumes the mother"))
    demo = _who(sec, text, seed, p)
    sex, age, unit = str(demo["sex"]), int(demo["age"]), str(demo["age_unit"])
    cc = re.sub(r"^[“\"']|[”\"'。]$", "", sec.get("chief", "").strip()).strip()
    if not cc:
        p.append(("$.opening.chief_complaint", "缺少【主诉】", "no 主诉 section"))
    main = subject_of(cc) or subject_of(sec.get("hpi", ""))
    lay = re.sub(r"(\d+|[一二两三四五六七八九十半]+)(余|多)?(个)?(小时|天|日|周|月|年|h)(余|多)?"
                 r"(?=$|[，,、])", r"\g<0>了", voice(cc, narrator))
    statement = f"医生，{'我家孩子' if narrator else '我'}{lay.lstrip('我')}。" if cc else ""
    for kind, zh in (("hpi", "现病史"), ("past", "既往史"), ("personal", "个人史"),
                     ("family", "家族史")):
        if kind not in sec:
            p.append(("$.facts", f"缺少【{zh}】", f"no {zh} section"))
    if sex == "female" and unit == "years" and 12 <= age <= 60 and "obstetric" not in sec:
        p.append(("$.facts", "缺少【月经史】/【婚育史】", "no menstrual or obstetric history"))
    child = bool(narrator)
    segs = hpi_segments(sec.get("hpi", ""), main)
    segs += section_segments(sec.get("past", ""), _PAST_RULES, "past_history", child)
    segs += section_segments(sec.get("birth", ""), _PAST_RULES, "birth_development", child)
    segs += section_segments(sec.get("personal", ""), _PERSONAL_RULES, "living_situation", child)
    obstetric = _OBSTETRIC_RULES if sex == "female" and not child else _OBSTETRIC_RULES[2:]
    segs += section_segments(sec.get("obstetric", ""), obstetric, "living_situation", child)
    segs += section_segments(sec.get("family", ""), [], "family_history")
    exam = sec.get("exam", "")
    if not exam:
        p.append(("$.exams", "缺少【体格检查】", "no 体格检查 section"))
    vitals = read_vitals([exam, text], VITALS_ZH)
    if not vitals:
        p.append(("$.opening.vitals", "病历中没有生命体征 (T/P/R/BP)",
                  "no vital signs in the record"))
    exams, general = exam_findings(exam)
    appearance = person(demo) + "".join("，" + g for g in general)
    if not general:
        p.append(("$.opening.appearance", "病历未描述一般情况，请补写病人的外观",
                  "the record says nothing of how the patient looks"))
    if "tests" not in sec:
        p.append(("$.tests", "缺少【辅助检查】", "no 辅助检查 section"))
    dept = re.search(r"(?:科别|科室)\s*[:：]\s*([^\s,，;；。]{2,10})", text)
    return Record(
        sections=sec, demographics=demo, narrator=narrator, chief_complaint=cc,
        statement=statement, appearance=appearance, segs=segs, exams=exams,
        tests=results_of_tests(sec.get("tests", "")), vitals=vitals,
        diagnoses=diagnoses(sec.get("diagnosis", "")),
        differentials=differentials(sec.get("differential", "")),
        department=dept.group(1) if dept else "", problems=p)
