"""The embedded ``sample-ko-en`` corpus: a deterministic, synthetic Korean→English generator.

It exists so that a fresh clone can run the whole pipeline with no network. The sentences are
synthetic but grammatical on both sides:

* Korean is SOV with particles chosen by the final consonant of the preceding syllable
  (은/는, 이/가, 을/를, 와/과, 으로/로), three tenses, plain (-다), polite (-요) and formal (-습니다)
  speech levels, short (안) and long (-지 않다) negation, questions, time and place phrases, and
  humble pronouns (저, 저희) in polite speech.
* English is SVO with a/an chosen by sound, agreement (-s, does/doesn't) and irregular past forms.

The English side is a function of the Korean side (Korean variants such as the speech level or the
topic/subject particle map to the same English sentence), so a model can learn it exactly.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

# --- Hangul ---------------------------------------------------------------------------------------

_BASE, _LAST = 0xAC00, 0xD7A3
_N, _L, _B, _SS = 4, 8, 17, 20  # final-consonant (jongseong) indices of ㄴ, ㄹ, ㅂ, ㅆ


def _final(syllable: str) -> int:
    """Index of the final consonant of a Hangul syllable, 0 when it ends in a vowel."""
    code = ord(syllable)
    if not _BASE <= code <= _LAST:
        return 0
    return (code - _BASE) % 28


def _with_final(syllable: str, final: int) -> str:
    code = ord(syllable) - _final(syllable)
    return chr(code + final)


def has_batchim(word: str) -> bool:
    return _final(word[-1]) != 0


def particle(word: str, after_consonant: str, after_vowel: str) -> str:
    return word + (after_consonant if has_batchim(word) else after_vowel)


def instrumental(word: str) -> str:
    """으로 after a consonant, 로 after a vowel or ㄹ."""
    return word + ("으로" if _final(word[-1]) not in (0, _L) else "로")


# --- Korean verbs ---------------------------------------------------------------------------------

LEVELS = ("plain", "polite", "formal")
TENSES = ("past", "present", "future")


@dataclass(frozen=True)
class KoVerb:
    stem: str  # 읽, 가, 만들, 공부하
    inf: str  # the 아/어 form: 읽어, 가, 만들어, 공부해
    fut: str = ""  # the 을/ㄹ form where irregular: 들을 (듣다), 도울 (돕다)

    @property
    def hada(self) -> bool:
        return len(self.stem) > 1 and self.stem.endswith("하")

    def future_stem(self) -> str:
        if self.fut:
            return self.fut
        final = _final(self.stem[-1])
        if final == 0:
            return self.stem[:-1] + _with_final(self.stem[-1], _L)
        if final == _L:
            return self.stem
        return self.stem + "을"

    def _drop_l(self) -> str:
        return self.stem[:-1] + _with_final(self.stem[-1], 0) if _final(self.stem[-1]) == _L else self.stem

    def conjugate(self, tense: str, level: str, question: bool) -> str:
        end = "?" if question else "."
        if tense == "past":
            past = self.inf[:-1] + _with_final(self.inf[-1], _SS)
            return past + {"plain": "니" if question else "다", "polite": "어요",
                           "formal": "습니까" if question else "습니다"}[level] + end
        if tense == "future":
            fut = self.future_stem()
            return fut + {"plain": " 거니" if question else " 것이다", "polite": " 거예요",
                          "formal": " 겁니까" if question else " 것입니다"}[level] + end
        # present
        if level == "polite":
            return self.inf + "요" + end
        base = self._drop_l()
        if level == "formal":
            tail = "니까" if question else "니다"
            if _final(base[-1]) == 0:
                return base[:-1] + _with_final(base[-1], _B) + tail + end
            return base + "습" + tail + end
        if question:
            return base + "니" + end
        if _final(base[-1]) == 0:
            return base[:-1] + _with_final(base[-1], _N) + "다" + end
        return base + "는다" + end

    def negate(self, tense: str, level: str, question: bool, long_form: bool) -> str:
        """Short negation (안 + verb) or long negation (verb-지 않다); 하다-verbs take the long form."""
        if long_form or self.hada:
            return self.stem + "지 " + _ANH.conjugate(tense, level, question)
        return "안 " + self.conjugate(tense, level, question)


_ANH = KoVerb("않", "않아")


# --- English --------------------------------------------------------------------------------------


def indefinite(phrase: str) -> str:
    """'a' or 'an' by the sound of the first word."""
    word = phrase.split()[0].lower()
    vowel_sound = word[0] in "aeiou" and not word.startswith(("uni", "use", "eu", "one"))
    return ("an " if vowel_sound or word.startswith("hour") else "a ") + phrase


@dataclass(frozen=True)
class EnVerb:
    base: str  # read / listen to
    third: str  # reads / listens to
    past: str  # read / listened to

    def phrase(self, subject: str, third_person: bool, tense: str, negative: bool, question: bool
               ) -> tuple[str, str]:
        """Return (head, rest): the words before and after the subject in a question, or
        ('', 'subject verb') in a statement."""
        if tense == "future":
            aux, main, affirmative = "will", self.base, f"will {self.base}"
        elif tense == "past":
            aux, main, affirmative = "did", self.base, self.past
        else:
            aux = "does" if third_person else "do"
            main, affirmative = self.base, self.third if third_person else self.base
        if question:
            head = {"will": "won't", "did": "didn't", "does": "doesn't", "do": "don't"}[aux] if negative else aux
            return head, f"{subject} {main}"
        verb = f"{aux} not {main}" if negative else affirmative
        return "", f"{subject} {verb}"


# --- Lexicon --------------------------------------------------------------------------------------
# Objects: (korean, english, article) with article "a" (a/an), "the", or "" (mass nouns, names).
OBJECTS: dict[str, list[tuple[str, str, str]]] = {
    "reading": [("책", "book", "a"), ("신문", "newspaper", "a"), ("잡지", "magazine", "a"),
                ("소설", "novel", "a"), ("편지", "letter", "a"), ("만화책", "comic book", "a"),
                ("시", "poem", "a"), ("교과서", "textbook", "a"), ("동화책", "storybook", "a"),
                ("사전", "dictionary", "a"), ("이메일", "email", "a")],
    "writing": [("편지", "letter", "a"), ("이메일", "email", "a"), ("보고서", "report", "a"),
                ("시", "poem", "a"), ("소설", "novel", "a"), ("메시지", "message", "a"),
                ("일기", "diary entry", "a"), ("엽서", "postcard", "a"), ("숙제", "homework", "")],
    "food": [("사과", "apple", "a"), ("빵", "bread", ""), ("밥", "rice", ""), ("김치", "kimchi", ""),
             ("라면", "ramen", ""), ("샌드위치", "sandwich", "a"), ("케이크", "cake", "a"),
             ("피자", "pizza", ""), ("바나나", "banana", "a"), ("오렌지", "orange", "a"),
             ("계란", "egg", "a"), ("샐러드", "salad", "a"), ("수박", "watermelon", "a"),
             ("햄버거", "hamburger", "a"), ("떡볶이", "tteokbokki", ""), ("비빔밥", "bibimbap", ""),
             ("아이스크림", "ice cream", ""), ("국수", "noodles", ""), ("생선", "fish", ""),
             ("고기", "meat", ""), ("만두", "dumplings", ""), ("포도", "grapes", ""),
             ("딸기", "strawberries", ""), ("감자", "potato", "a"), ("쿠키", "cookie", "a")],
    "dish": [("케이크", "cake", "a"), ("샌드위치", "sandwich", "a"), ("피자", "pizza", ""), ("샐러드", "salad", "a"),
             ("김치", "kimchi", ""), ("라면", "ramen", ""), ("떡볶이", "tteokbokki", ""), ("비빔밥", "bibimbap", ""),
             ("만두", "dumplings", ""), ("햄버거", "hamburger", "a"), ("쿠키", "cookies", ""), ("수프", "soup", "")],
    "drink": [("물", "water", ""), ("커피", "coffee", ""), ("우유", "milk", ""), ("녹차", "green tea", ""),
              ("홍차", "black tea", ""), ("주스", "juice", ""), ("맥주", "beer", ""), ("와인", "wine", ""),
              ("콜라", "cola", ""), ("소주", "soju", ""), ("레몬에이드", "lemonade", "")],
    "show": [("영화", "movie", "a"), ("드라마", "drama", "a"), ("뉴스", "news", "the"),
             ("축구 경기", "soccer game", "a"), ("야구 경기", "baseball game", "a"), ("연극", "play", "a"),
             ("다큐멘터리", "documentary", "a"), ("공연", "show", "a"), ("만화", "cartoon", "a"),
             ("뮤지컬", "musical", "a")],
    "music": [("음악", "music", ""), ("노래", "song", "a"), ("라디오", "radio", "the"),
              ("강의", "lecture", "a"), ("뉴스", "news", "the"), ("팟캐스트", "podcast", "a"),
              ("음반", "album", "an")],
    "thing": [("우산", "umbrella", "a"), ("가방", "bag", "a"), ("시계", "watch", "a"),
              ("컴퓨터", "computer", "a"), ("자전거", "bicycle", "a"), ("모자", "hat", "a"),
              ("신발", "shoes", ""), ("옷", "clothes", ""), ("휴대폰", "phone", "a"),
              ("카메라", "camera", "a"), ("의자", "chair", "a"), ("책상", "desk", "a"), ("공", "ball", "a"),
              ("장난감", "toy", "a"), ("꽃", "flowers", ""), ("선물", "gift", "a"), ("지갑", "wallet", "a"),
              ("안경", "glasses", ""), ("연필", "pencil", "a"), ("노트북", "laptop", "a"),
              ("거울", "mirror", "a"), ("침대", "bed", "a"), ("냄비", "pot", "a")],
    "openable": [("문", "door", "the"), ("창문", "window", "the"), ("상자", "box", "the"),
                 ("냉장고", "refrigerator", "the"), ("서랍", "drawer", "the"), ("가방", "bag", "the"),
                 ("병", "bottle", "the")],
    "room": [("방", "room", "the"), ("부엌", "kitchen", "the"), ("집", "house", "the"),
             ("교실", "classroom", "the"), ("화장실", "bathroom", "the"), ("사무실", "office", "the"),
             ("거실", "living room", "the"), ("마당", "yard", "the"), ("차고", "garage", "the")],
    "person": [("친구", "friend", "a"), ("선생님", "teacher", "the"), ("의사", "doctor", "a"),
               ("손님", "guest", "a"), ("민수", "Minsu", ""), ("지영", "Jiyoung", ""),
               ("할머니", "my grandmother", ""), ("동생", "my younger brother", ""),
               ("이웃", "neighbor", "a"), ("사장님", "the boss", ""), ("아이들", "the children", ""),
               ("준호", "Junho", ""), ("서연", "Seoyeon", "")],
    "subject": [("한국어", "Korean", ""), ("영어", "English", ""), ("수학", "math", ""),
                ("역사", "history", ""), ("과학", "science", ""), ("음악", "music", ""),
                ("피아노", "piano", "the"), ("중국어", "Chinese", ""), ("일본어", "Japanese", ""),
                ("요리", "cooking", ""), ("미술", "art", ""), ("기타", "guitar", "the"),
                ("경제학", "economics", ""), ("프로그래밍", "programming", "")],
    "photo": [("사진", "picture", "a"), ("가족사진", "family photo", "a"), ("셀카", "selfie", "a")],
    "song": [("노래", "song", "a"), ("동요", "children's song", "a"), ("국가", "national anthem", "the"),
             ("자장가", "lullaby", "a")],
    "draw": [("그림", "picture", "a"), ("지도", "map", "a"), ("고양이", "cat", "a"), ("강아지", "puppy", "a"),
             ("나무", "tree", "a"), ("얼굴", "face", "a"), ("집", "house", "a")],
    "machine": [("컴퓨터", "computer", "the"), ("자전거", "bicycle", "the"), ("시계", "watch", "the"),
                ("의자", "chair", "the"), ("자동차", "car", "the"), ("냉장고", "refrigerator", "the"),
                ("세탁기", "washing machine", "the"), ("라디오", "radio", "the"), ("프린터", "printer", "the"),
                ("에어컨", "air conditioner", "the")],
    "washable": [("접시", "dishes", "the"), ("사과", "apple", "an"), ("컵", "cup", "the"),
                 ("채소", "vegetables", "the"), ("차", "car", "the"), ("강아지", "dog", "the"),
                 ("운동화", "sneakers", "the"), ("냄비", "pot", "the")],
    "gift": [("선물", "gift", "a"), ("소포", "package", "a"), ("꽃", "flowers", ""), ("돈", "money", ""),
             ("편지", "letter", "a"), ("이메일", "email", "an"), ("메시지", "message", "a"),
             ("카드", "card", "a"), ("상", "prize", "a")],
}

# Adjectives (korean, english) by the object categories they fit; mass nouns take the "mass" list.
ADJECTIVES: dict[str, list[tuple[str, str]]] = {
    "reading": [("새", "new"), ("재미있는", "interesting"), ("오래된", "old"), ("두꺼운", "thick"),
                ("짧은", "short"), ("긴", "long"), ("어려운", "difficult"), ("쉬운", "easy")],
    "dish": [("맛있는", "delicious"), ("큰", "big"), ("작은", "small")],
    "food": [("맛있는", "delicious"), ("큰", "big"), ("작은", "small"), ("따뜻한", "warm"),
             ("신선한", "fresh")],
    "drink": [("차가운", "cold"), ("뜨거운", "hot"), ("시원한", "cool")],
    "show": [("재미있는", "interesting"), ("슬픈", "sad"), ("무서운", "scary"), ("새", "new"),
             ("긴", "long"), ("지루한", "boring")],
    "thing": [("새", "new"), ("큰", "big"), ("작은", "small"), ("오래된", "old"), ("비싼", "expensive"),
              ("싼", "cheap"), ("예쁜", "pretty"), ("빨간", "red"), ("파란", "blue"), ("검은", "black"),
              ("하얀", "white"), ("노란", "yellow")],
    "room": [("큰", "big"), ("작은", "small"), ("더러운", "dirty"), ("넓은", "large")],
}

# Verbs: korean, english (base, third person, past), frame, object category, companion allowed.
VERBS: list[tuple[KoVerb, EnVerb, str, str, bool]] = [
    (KoVerb("읽", "읽어"), EnVerb("read", "reads", "read"), "trans", "reading", True),
    (KoVerb("먹", "먹어"), EnVerb("eat", "eats", "ate"), "trans", "food", True),
    (KoVerb("마시", "마셔"), EnVerb("drink", "drinks", "drank"), "trans", "drink", True),
    (KoVerb("사", "사"), EnVerb("buy", "buys", "bought"), "trans", "thing", True),
    (KoVerb("사", "사"), EnVerb("buy", "buys", "bought"), "trans", "food", True),
    (KoVerb("쓰", "써"), EnVerb("write", "writes", "wrote"), "trans", "writing", True),
    (KoVerb("보", "봐"), EnVerb("watch", "watches", "watched"), "trans", "show", True),
    (KoVerb("만들", "만들어"), EnVerb("make", "makes", "made"), "trans", "dish", True),
    (KoVerb("만들", "만들어"), EnVerb("make", "makes", "made"), "trans", "thing", True),
    (KoVerb("청소하", "청소해"), EnVerb("clean", "cleans", "cleaned"), "trans", "room", True),
    (KoVerb("열", "열어"), EnVerb("open", "opens", "opened"), "trans", "openable", False),
    (KoVerb("닫", "닫아"), EnVerb("close", "closes", "closed"), "trans", "openable", False),
    (KoVerb("만나", "만나"), EnVerb("meet", "meets", "met"), "trans", "person", False),
    (KoVerb("돕", "도와", "도울"), EnVerb("help", "helps", "helped"), "trans", "person", False),
    (KoVerb("기다리", "기다려"), EnVerb("wait for", "waits for", "waited for"), "trans", "person", False),
    (KoVerb("배우", "배워"), EnVerb("learn", "learns", "learned"), "trans", "subject", True),
    (KoVerb("가르치", "가르쳐"), EnVerb("teach", "teaches", "taught"), "trans", "subject", False),
    (KoVerb("공부하", "공부해"), EnVerb("study", "studies", "studied"), "trans", "subject", True),
    (KoVerb("듣", "들어", "들을"), EnVerb("listen to", "listens to", "listened to"), "trans", "music", True),
    (KoVerb("팔", "팔아"), EnVerb("sell", "sells", "sold"), "trans", "thing", False),
    (KoVerb("빌리", "빌려"), EnVerb("borrow", "borrows", "borrowed"), "trans", "reading", False),
    (KoVerb("찍", "찍어"), EnVerb("take", "takes", "took"), "trans", "photo", True),
    (KoVerb("부르", "불러"), EnVerb("sing", "sings", "sang"), "trans", "song", True),
    (KoVerb("그리", "그려"), EnVerb("draw", "draws", "drew"), "trans", "draw", True),
    (KoVerb("고치", "고쳐"), EnVerb("fix", "fixes", "fixed"), "trans", "machine", True),
    (KoVerb("보내", "보내"), EnVerb("send", "sends", "sent"), "trans", "gift", False),
    (KoVerb("받", "받아"), EnVerb("receive", "receives", "received"), "trans", "gift", False),
    (KoVerb("씻", "씻어"), EnVerb("wash", "washes", "washed"), "trans", "washable", True),
    (KoVerb("주문하", "주문해"), EnVerb("order", "orders", "ordered"), "trans", "food", True),
    (KoVerb("주문하", "주문해"), EnVerb("order", "orders", "ordered"), "trans", "drink", True),
    (KoVerb("좋아하", "좋아해"), EnVerb("like", "likes", "liked"), "trans", "food", False),
    (KoVerb("찾", "찾아"), EnVerb("find", "finds", "found"), "trans", "thing", True),
    (KoVerb("잃어버리", "잃어버려"), EnVerb("lose", "loses", "lost"), "trans", "thing", False),
    (KoVerb("가", "가"), EnVerb("go", "goes", "went"), "move", "", True),
    (KoVerb("오", "와"), EnVerb("come", "comes", "came"), "move", "", True),
    (KoVerb("돌아가", "돌아가"), EnVerb("go back", "goes back", "went back"), "move", "", True),
    (KoVerb("걸어가", "걸어가"), EnVerb("walk", "walks", "walked"), "walk", "", True),
    (KoVerb("뛰어가", "뛰어가"), EnVerb("run", "runs", "ran"), "walk", "", True),
    (KoVerb("자", "자"), EnVerb("sleep", "sleeps", "slept"), "intrans", "", False),
    (KoVerb("쉬", "쉬어"), EnVerb("rest", "rests", "rested"), "intrans", "", True),
    (KoVerb("일하", "일해"), EnVerb("work", "works", "worked"), "intrans", "", True),
    (KoVerb("운동하", "운동해"), EnVerb("exercise", "exercises", "exercised"), "intrans", "", True),
    (KoVerb("수영하", "수영해"), EnVerb("swim", "swims", "swam"), "intrans", "", True),
    (KoVerb("춤추", "춤춰"), EnVerb("dance", "dances", "danced"), "intrans", "", True),
    (KoVerb("놀", "놀아"), EnVerb("play", "plays", "played"), "intrans", "", True),
    (KoVerb("웃", "웃어"), EnVerb("laugh", "laughs", "laughed"), "intrans", "", True),
    (KoVerb("울", "울어"), EnVerb("cry", "cries", "cried"), "intrans", "", False),
    (KoVerb("기다리", "기다려"), EnVerb("wait", "waits", "waited"), "intrans", "", True),
    (KoVerb("요리하", "요리해"), EnVerb("cook", "cooks", "cooked"), "intrans", "", True),
    (KoVerb("노래하", "노래해"), EnVerb("sing", "sings", "sang"), "intrans", "", True),
    (KoVerb("산책하", "산책해"), EnVerb("take a walk", "takes a walk", "took a walk"), "intrans", "", True),
    (KoVerb("아르바이트하", "아르바이트해"), EnVerb("work part-time", "works part-time",
                                                   "worked part-time"), "intrans", "", False),
]

# Subjects: korean (plain), korean (polite speech), english, third person singular.
SUBJECTS: list[tuple[str, str, str, bool]] = [
    ("나", "저", "I", False), ("너", "", "you", False), ("우리", "저희", "we", False),
    ("그", "그", "he", True), ("그녀", "그녀", "she", True), ("그들", "그들", "they", False),
    ("민수", "민수", "Minsu", True), ("지영", "지영", "Jiyoung", True), ("서연", "서연", "Seoyeon", True),
    ("준호", "준호", "Junho", True), ("하준", "하준", "Hajun", True), ("수빈", "수빈", "Subin", True),
    ("학생", "학생", "the student", True), ("학생들", "학생들", "the students", False),
    ("선생님", "선생님", "the teacher", True), ("의사", "의사", "the doctor", True),
    ("아이", "아이", "the child", True), ("아이들", "아이들", "the children", False),
    ("내 친구", "제 친구", "my friend", True), ("어머니", "어머니", "my mother", True),
    ("아버지", "아버지", "my father", True), ("할아버지", "할아버지", "my grandfather", True),
    ("남동생", "남동생", "my younger brother", True), ("언니", "언니", "my older sister", True),
    ("요리사", "요리사", "the chef", True), ("경찰관", "경찰관", "the police officer", True),
    ("회사원", "회사원", "the office worker", True), ("기자", "기자", "the reporter", True),
    ("관광객들", "관광객들", "the tourists", False), ("사장님", "사장님", "the boss", True),
]

# Places: korean, english "at" phrase, english destination phrase.
PLACES: list[tuple[str, str, str]] = [
    ("도서관", "at the library", "to the library"), ("학교", "at school", "to school"),
    ("집", "at home", "home"), ("공원", "in the park", "to the park"), ("카페", "at the cafe", "to the cafe"),
    ("식당", "at the restaurant", "to the restaurant"), ("회사", "at the office", "to the office"),
    ("시장", "at the market", "to the market"), ("병원", "at the hospital", "to the hospital"),
    ("은행", "at the bank", "to the bank"), ("교회", "at church", "to church"),
    ("바닷가", "at the beach", "to the beach"), ("서울", "in Seoul", "to Seoul"), ("부산", "in Busan", "to Busan"),
    ("제주도", "on Jeju Island", "to Jeju Island"), ("백화점", "at the department store",
                                                     "to the department store"),
    ("영화관", "at the movie theater", "to the movie theater"), ("체육관", "at the gym", "to the gym"),
    ("수영장", "at the swimming pool", "to the swimming pool"), ("기숙사", "in the dormitory",
                                                                "to the dormitory"),
    ("호텔", "at the hotel", "to the hotel"), ("공항", "at the airport", "to the airport"),
    ("역", "at the station", "to the station"), ("대학교", "at the university", "to the university"),
    ("우체국", "at the post office", "to the post office"), ("편의점", "at the convenience store",
                                                             "to the convenience store"),
    ("서점", "at the bookstore", "to the bookstore"), ("박물관", "at the museum", "to the museum"),
    ("미술관", "at the art gallery", "to the art gallery"), ("동물원", "at the zoo", "to the zoo"),
    ("친구 집", "at a friend's house", "to a friend's house"), ("시골", "in the countryside",
                                                               "to the countryside"),
    ("교실", "in the classroom", "to the classroom"), ("놀이터", "at the playground", "to the playground"),
    ("산", "on the mountain", "to the mountain"), ("가게", "at the store", "to the store"),
]

TRANSPORT: list[tuple[str, str]] = [
    ("버스", "by bus"), ("지하철", "by subway"), ("택시", "by taxi"), ("기차", "by train"),
    ("자전거", "by bike"), ("비행기", "by plane"), ("차", "by car"), ("배", "by boat"),
    ("오토바이", "by motorcycle"), ("고속버스", "by express bus"),
]

INSTRUMENTS: list[tuple[str, str]] = [
    ("펜", "with a pen"), ("연필", "with a pencil"), ("붓", "with a brush"), ("컴퓨터", "on a computer"),
    ("휴대폰", "on a phone"), ("손", "by hand"), ("볼펜", "with a ballpoint pen"),
]

COMPANIONS: list[tuple[str, str]] = [
    ("친구", "with a friend"), ("동생", "with my younger brother"), ("어머니", "with my mother"),
    ("아버지", "with my father"), ("선생님", "with the teacher"), ("동료", "with a coworker"),
    ("가족", "with my family"), ("민수", "with Minsu"), ("지영", "with Jiyoung"), ("강아지", "with the dog"),
    ("반 친구들", "with classmates"), ("할머니", "with my grandmother"), ("형", "with my older brother"),
]

TIMES: dict[str, list[tuple[str, str]]] = {
    "past": [("어제", "yesterday"), ("어젯밤", "last night"), ("지난주", "last week"),
             ("지난 주말", "last weekend"), ("작년", "last year"), ("그저께", "the day before yesterday"),
             ("오늘 아침", "this morning"), ("지난달", "last month"), ("오늘", "today")],
    "present": [("매일", "every day"), ("주말마다", "every weekend"), ("아침마다", "every morning"),
                ("저녁마다", "every evening"), ("매주", "every week"), ("오늘", "today"),
                ("일요일마다", "every Sunday")],
    "future": [("내일", "tomorrow"), ("모레", "the day after tomorrow"), ("다음 주", "next week"),
               ("다음 달", "next month"), ("내년", "next year"), ("내일 아침", "tomorrow morning"),
               ("이번 주말", "this weekend"), ("오늘", "today"), ("내일 저녁", "tomorrow evening")],
}


def _object(rng: random.Random, category: str) -> tuple[str, str]:
    ko, en, article = rng.choice(OBJECTS[category])
    adjectives = ADJECTIVES.get(category, [])
    if adjectives and article != "" and rng.random() < 0.3:
        adj_ko, adj_en = rng.choice(adjectives)
        ko, en = f"{adj_ko} {ko}", f"{adj_en} {en}"
    elif category == "drink" and rng.random() < 0.3:
        adj_ko, adj_en = rng.choice(ADJECTIVES["drink"])
        ko, en = f"{adj_ko} {ko}", f"{adj_en} {en}"
    if article == "a":
        en = indefinite(en)
    elif article:  # "the", or "an" fixed in the lexicon
        en = f"{article} {en}"
    return ko, en


def _subject(rng: random.Random, level: str, question: bool) -> tuple[str, str, bool]:
    """(Korean subject with its particle, English subject, third person singular)."""
    subjects = [s for s in SUBJECTS if (s[1] if level != "plain" else s[0])]
    if question:  # asking about oneself reads oddly; keep questions to other people
        subjects = [s for s in subjects if s[2] != "I"]
    subj_plain, subj_polite, subj_en, third = rng.choice(subjects)
    subj_ko = subj_plain if level == "plain" else subj_polite
    subj_ko = particle(subj_ko, "은", "는") if rng.random() < 0.7 else particle(subj_ko, "이", "가")
    if subj_ko in ("나가", "저가", "너가"):  # the subject forms of 나/저/너 are 내가/제가/네가
        subj_ko = {"나가": "내가", "저가": "제가", "너가": "네가"}[subj_ko]
    return subj_ko, subj_en, third


def _companion(rng: random.Random, ko: list[str]) -> str:
    comp = rng.choice(COMPANIONS)
    ko.append(particle(comp[0], "과", "와") + rng.choice([" 함께", " 같이"]))
    return comp[1]


def _motion(rng: random.Random, frame: str, companion_ok: bool, ko: list[str]) -> list[str]:
    """Going somewhere: (with someone) (by some means) to a place. Appends the Korean, returns the English."""
    place = rng.choice(PLACES)
    companion_en = _companion(rng, ko) if companion_ok and rng.random() < 0.3 else ""
    transport_en = ""
    if frame == "move" and rng.random() < 0.4:
        vehicle = rng.choice(TRANSPORT)
        ko.append(instrumental(vehicle[0]))
        transport_en = vehicle[1]
    ko.append(place[0] + "에")
    return [place[2], transport_en, companion_en]


def _action(rng: random.Random, frame: str, category: str, companion_ok: bool, ko: list[str]) -> list[str]:
    """Doing something: (at a place) (with someone) (with a tool) (an object). Appends the Korean."""
    place_en = ""
    if rng.random() < 0.6:
        place = rng.choice(PLACES)
        ko.append(place[0] + "에서")
        place_en = place[1]
    companion_en = _companion(rng, ko) if companion_ok and rng.random() < 0.25 else ""
    object_en = instrument_en = ""
    if frame == "trans":
        if category in ("writing", "draw") and rng.random() < 0.3:
            tool = rng.choice(INSTRUMENTS)
            ko.append(instrumental(tool[0]))
            instrument_en = tool[1]
        obj_ko, object_en = _object(rng, category)
        ko.append(particle(obj_ko, "을", "를"))
    return [object_en, place_en, instrument_en, companion_en]


def sentence_pair(rng: random.Random) -> tuple[str, str]:
    """One random (Korean, English) sentence pair."""
    ko_verb, en_verb, frame, category, companion_ok = rng.choice(VERBS)
    tense = rng.choice(TENSES)
    level = rng.choice(LEVELS)
    question = rng.random() < 0.2
    negative = rng.random() < 0.25
    subj_ko, subj_en, third = _subject(rng, level, question)

    ko: list[str] = [subj_ko]
    time = rng.choice(TIMES[tense]) if rng.random() < 0.8 else None
    if time:
        ko.append(time[0])
    if frame in ("move", "walk"):
        en_tail = _motion(rng, frame, companion_ok, ko)
    else:
        en_tail = _action(rng, frame, category, companion_ok, ko)
    if negative:
        ko.append(ko_verb.negate(tense, level, question, long_form=rng.random() < 0.5))
    else:
        ko.append(ko_verb.conjugate(tense, level, question))

    if time:
        en_tail.append(time[1])
    head, core = en_verb.phrase(subj_en, third, tense, negative, question)
    words = [head, core, *en_tail] if head else [core, *en_tail]
    english = " ".join(w for w in words if w)
    english = english[0].upper() + english[1:] + ("?" if question else ".")
    korean = " ".join(ko)
    if not question and rng.random() < 0.3:  # casual writing often drops the full stop
        korean = korean.removesuffix(".")
    return korean, english


def generate(pairs: int, seed: int) -> Iterator[tuple[str, str]]:
    """Yield ``pairs`` distinct (Korean, English) pairs, the same ones for the same seed."""
    rng = random.Random(seed)
    seen: set[str] = set()
    attempts = 0
    while len(seen) < pairs:
        attempts += 1
        if attempts > 50 * pairs + 1000:
            raise ValueError(f"the sample grammar cannot produce {pairs} distinct pairs")
        ko, en = sentence_pair(rng)
        if ko not in seen:
            seen.add(ko)
            yield ko, en
